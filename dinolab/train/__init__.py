"""Self-supervised pretraining: configuration, schedules, the objectives and the training loop.

- :func:`load_config` / :class:`Config`: YAML presets and files plus dotted overrides, checked.
- :func:`train` / :class:`Trainer`: a run directory with config, metrics, checkpoints, teacher export.
- :class:`Objective`, :func:`register_objective`: a method is a configuration of loss terms.

``dinolab.train(config)`` is the public entry point, but ``dinolab.train`` is also this package
(Python binds a subpackage to its parent's attribute once imported), so the package itself is
callable and forwards to :func:`train`.
"""

import sys
import types

from .config import Config, ConfigError, load_config, validate
from .objectives import Objective, Objectives, StepInputs, register_objective
from .trainer import Trainer, TrainingDiverged, TrainResult, train

__all__ = ["Config", "ConfigError", "load_config", "validate", "Objective", "Objectives", "StepInputs",
           "register_objective", "Trainer", "TrainResult", "TrainingDiverged", "train"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
