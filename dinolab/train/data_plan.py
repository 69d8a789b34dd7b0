"""The data plan of a run: which images each iteration reads, on which process, and the bad files met.

Iteration ``i`` reads global batch ``i mod batches_per_pass`` of pass ``i div batches_per_pass``;
the order of a pass is a permutation drawn from ``(train.seed, pass)`` (:class:`~dinolab.data.ShardedSampler`),
so a resumed run reads the same images as one that never stopped. Each process reads its share of
the global batch, ``train.accumulate`` micro-batches per iteration; every image carries its
position in the global batch, on which the crops and masks are keyed.

Examples:
    >>> from dinolab.train.config import load_config
    >>> cfg = load_config("default", ["train.batch_size=32", "train.accumulate=2"])
    >>> plan = DataPlan(cfg, build_run_data(cfg), torch.device("cpu"), None)  # doctest: +SKIP
    >>> plan.micro_batch, plan.batches_per_pass                                 # doctest: +SKIP
    (16, 44)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..data import BadFileLog, ShardedSampler, make_loader
from ..errors import DataError
from .build import num_workers
from .config import Config
from .data import RunData

BAD_FILES_NAME = "bad_files.log"


class DataPlan:
    """Sampler, loader and bad-file bookkeeping of one process.

    Args:
        config: the run's config.
        data: its images (:func:`~dinolab.train.data.build_run_data`).
        device: the training device (pinned memory on CUDA).
        run_dir: where ``bad_files.log`` goes.
        max_global_size: the largest global crop of the run (the default load size is twice it).
        rank / world_size: this process and the number of processes.

    Attributes:
        micro_batch: images per micro-batch on this process.
        batches_per_pass: iterations per pass over the data.
        iters_per_epoch: ``train.epoch_length`` or ``batches_per_pass``.
    """

    def __init__(self, config: Config, data: RunData, device: torch.device, run_dir: Path, max_global_size: int,
                 rank: int = 0, world_size: int = 1) -> None:
        c, t = config, config.train
        self.config, self.data, self.rank, self.world_size = config, data, rank, world_size
        n = len(data.train)
        self.micro_batch = t.batch_size // (world_size * t.accumulate)
        self.batches_per_pass = (n // world_size) // (self.micro_batch * t.accumulate)
        if self.batches_per_pass == 0:
            raise DataError(f"{data.train.source} has {n} training images, fewer than train.batch_size="
                            f"{t.batch_size}; lower train.batch_size (e.g. train.batch_size={max(1, n // 2)})")
        self.iters_per_epoch = t.epoch_length or self.batches_per_pass
        self.sampler = ShardedSampler(n, shuffle=True, seed=t.seed, drop_last=True, rank=rank, world_size=world_size)
        load_size = c.data.load_size or 2 * max_global_size
        self.loader = make_loader(data.train, self.micro_batch, drop_last=True, num_workers=num_workers(c),
                                  resize_mode="train", load_size=load_size, max_aspect=c.data.max_aspect,
                                  sampler=self.sampler, pin_memory=device.type == "cuda")
        self.bad_files = BadFileLog(c.data.max_bad_fraction, run_dir / BAD_FILES_NAME)
        self.eval_bad_files: dict[str, str] = {}  # unreadable files met by the k-NN evaluation (both splits)

    def batches(self, start: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(iteration, micro-batches)`` from iteration ``start`` on, pass after pass over the data."""
        accumulate, it = self.config.train.accumulate, start
        while True:
            data_pass, offset = divmod(it, self.batches_per_pass)
            self.sampler.set_epoch(data_pass)
            self.sampler.skip(offset * self.micro_batch * accumulate)
            share = self.sampler.shard()  # this rank's images of the pass: slot k is global-batch position
            slot = np.zeros(len(self.data.train), dtype=np.int64)  # (k mod per-rank step) x world + rank
            slot[share] = np.arange(len(share)) % (self.micro_batch * accumulate) * self.world_size + self.rank
            group: list[dict[str, Any]] = []
            for batch in self.loader:
                batch["positions"] = torch.from_numpy(slot[batch["indices"].numpy()])
                group.append(batch)
                if len(group) == accumulate:
                    yield it, group
                    group, it = [], it + 1

    def position(self, iteration: int) -> dict[str, int]:
        """Where ``iteration`` completed iterations leave the data (saved in checkpoints, checked on resume)."""
        return {"seed": self.config.train.seed, "batches_per_pass": self.batches_per_pass,
                "pass": iteration // self.batches_per_pass, "batch": iteration % self.batches_per_pass}

    def check_bad_files(self, bad: list[tuple[str, str]], it: int) -> None:
        """``bad``: the unreadable files of iteration ``it`` on every rank (judged against the global count)."""
        self.bad_files.add(bad)
        if bad or self.bad_files.count:
            n = len(self.data.train)
            seen = min(n, (it + 1) * self.config.train.batch_size)
            try:
                self.bad_files.check(seen, total=n)
            except DataError:
                self.write_bad_files()  # the message points at the log
                raise

    def bad_file_report(self) -> BadFileLog:
        """Every unreadable file met so far, by training steps or the k-NN evaluation."""
        report = BadFileLog(log_path=self.bad_files.log_path)
        report.add(self.bad_files.items)
        report.add(self.eval_bad_files.items())
        return report

    def write_bad_files(self) -> None:
        report = self.bad_file_report()
        if report.count and self.rank == 0:
            report.write()
