"""Self-supervised pretraining and distillation: the schema, the loss terms, the teacher and the loop.

Layers, from the user down (the run runtime under them is :mod:`dinolab.runtime`):

- schema: :mod:`.config` (:class:`Config` sections, :func:`load_config`) and :mod:`.validation`
  (:func:`validate`, the cross-field checks);
- loop: :mod:`.trainer` (:class:`Trainer`, :func:`train`: run directory, checkpoints, resume,
  signals, the loop), :mod:`.callbacks` (export, k-NN, checkpoint, collapse monitor), :mod:`.step`
  (one iteration), :mod:`.data_plan` (which images each iteration reads), :mod:`.build` (models);
- method: :mod:`.objectives` (one module per loss term; :func:`register_objective`) and
  :mod:`.teacher` (EMA or frozen teacher, :class:`~dinolab.train.teacher.TeacherStrategy`);
- per-run pieces: :mod:`.schedules`, :mod:`.optim` / :mod:`.param_groups`, :mod:`.crop_plan`,
  :mod:`.data`, :mod:`.pretrained`, :mod:`.monitor`, :mod:`.evaluation`.

``dinolab.train(config)`` is the public entry point, but ``dinolab.train`` is also this package
(Python binds a subpackage to its parent's attribute once imported), so the package itself is
callable and forwards to :func:`train`.
"""

import sys
import types

from .callbacks import Callback
from .config import Config, ConfigError, load_config, validate
from .objectives import Objective, Objectives, StepInputs, register_objective
from .teacher import TeacherStrategy
from .trainer import Trainer, TrainingDiverged, TrainResult, train

__all__ = ["Callback", "Config", "ConfigError", "load_config", "validate", "Objective", "Objectives", "StepInputs",
           "register_objective", "TeacherStrategy", "Trainer", "TrainResult", "TrainingDiverged", "train"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
