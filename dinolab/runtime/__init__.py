"""The run runtime every training loop shares (``dinolab train``, ``dinolab align``, fine-tuning).

Nothing here knows about a particular objective or model family; ``dinolab.train`` and
``dinolab.text`` build on it, never the other way round.

- :mod:`.config_loader`: dataclass configs from YAML, presets and ``key=value`` overrides, with
  ranges declared with the fields (:class:`~.config_loader.ConfigSchema`, :func:`~.config_loader.bounded`).
- :mod:`.checkpoint`: atomic checkpoints with the previous one kept, read without running code.
- :mod:`.metrics_log`: ``metrics.jsonl``, truncated on resume.
- :mod:`.loop`: the metrics log and stop signals a resumable loop opens (align, fine-tuning, segment fit).
- :mod:`.schedules`: the freeze + warm-up + cosine schedule.
- :mod:`.distributed`, :mod:`.fsdp`: torchrun process groups, DDP / FSDP2 wrapping, sharded checkpoints.
- :mod:`.cpu_memory`: glibc settings that keep freed memory for reuse in CPU training.

Submodules are imported on use (``import dinolab.runtime`` stays cheap).
"""
