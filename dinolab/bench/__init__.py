"""Benchmarks of dinolab: throughput, memory, FLOP utilisation, against reference implementations.

Library code behind ``dinolab bench`` and the scripts in ``bench/``:

- :mod:`.timing`: interleaved timing of several workloads (A B B A ...), so that machine load hits
  every side alike; device synchronisation; per-call peak memory (:mod:`.memory`).
- :mod:`.peak`: the matrix-multiply peak (FLOP/s) of a device and dtype, measured in the same run.
- :mod:`.flops`: analytic FLOPs of a ViT forward / a DINO training step.
- :mod:`.embed`, :mod:`.train_step`, :mod:`.augment`, :mod:`.scaling`: the benchmarks themselves,
  each returning a JSON-able dict; :mod:`.report` prints them as tables.
"""
