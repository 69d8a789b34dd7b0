"""Two CPU processes (gloo) train exactly like one process with the same global batch and seed.

The tiny config runs DINO + iBOT (separate head, Sinkhorn-Knopp) with 2 accumulation steps and no
stochastic depth (in-model randomness is drawn per rank; crops and masks are keyed on the image's
place in the global batch, so they are the same whatever the split). The reference is a plain
one-process run in the test process; the 2-process runs go through ``torchrun -m dinolab train``
(the real command line) or through ``torch.multiprocessing`` workers that set torchrun's variables
and let the trainer join the group itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from dinolab.data.masking import sample_ibot_masks, sample_ibot_masks_at
from dinolab.data.multicrop import MultiCrop
from dinolab.runtime.checkpoint import load_checkpoint
from dinolab.runtime.fsdp import _chunk_rows, consolidate
from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.trainer import Trainer

from .conftest import TINY

# KoLeo is computed on each process's own images (as in DINOv2), so it changes with the split: off here
SAME = ("koleo.loss_weight=0", "model.drop_path_rate=0", "ibot.loss_weight=1.0", "ibot.separate_head=true",
        "dino.centering=sinkhorn_knopp", "train.accumulate=2")
N = 6  # 2 epochs of 3 steps; 32 images at batch 8: the second pass over the data starts at step 5


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def _assert_same_run(got_dir, expected_dir, rel: float) -> None:
    got, expected = _losses(got_dir), _losses(expected_dir)
    assert sorted(got) == list(range(1, N + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=rel), step
    a, b = load_checkpoint(expected_dir), load_checkpoint(got_dir)
    assert b["iteration"] == a["iteration"] == N


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny):
    """The reference: one process, global batch 8, the same seed."""
    run = tmp_path_factory.mktemp("single")
    assert Trainer(tiny(*SAME), run).fit().iterations == N
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str, overrides: list[str], resume: bool,
            stop_after: int | None) -> None:
    """One rank, set up as torchrun would; rank 1 alone asks to stop after ``stop_after`` steps."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from dinolab.train.config import load_config

    trainer = Trainer.from_run(run_dir, overrides) if resume else Trainer(load_config("default", overrides), run_dir)
    if stop_after is not None and rank == 1:
        trainer.on_loss = lambda it, loss: (trainer.request_stop() if it == stop_after - 1 else None) or loss
    result = trainer.fit()
    assert result.iterations == (stop_after or N), result
    assert not torch.distributed.is_initialized()  # the trainer left the group it joined


def _spawn(world: int, run_dir, overrides=(), *, resume: bool = False, stop_after: int | None = None) -> None:
    mp.spawn(_worker, args=(world, _free_port(), str(run_dir), list(overrides), resume, stop_after), nprocs=world,
             join=True)


def test_torchrun_two_processes_match_one_process(tmp_path, single):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dinolab", "train", *TINY, *SAME, "--out", str(run)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # rank 0 reports
    _assert_same_run(run, single, rel=1e-5)
    records = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert len(records) == N  # one writer
    assert all(r["images"] == 8 and len(r["peak_mem_mb_per_rank"]) == 2 and r["images_per_s"] > 0 for r in records)
    torch.testing.assert_close(load_checkpoint(run)["teacher"], load_checkpoint(single)["teacher"],
                               rtol=1e-4, atol=1e-6)


def test_stop_on_one_rank_stops_all_and_resumes_on_two_or_one_process(tmp_path, single, tiny):
    overrides = [*TINY, *SAME]
    _spawn(2, tmp_path / "two", overrides, stop_after=2)  # only rank 1 asks to stop: both must
    assert load_checkpoint(tmp_path / "two")["iteration"] == 2
    _spawn(2, tmp_path / "two", resume=True)
    _assert_same_run(tmp_path / "two", single, rel=1e-5)

    _spawn(2, tmp_path / "elastic", overrides, stop_after=4)
    assert Trainer.from_run(tmp_path / "elastic").fit().iterations == N  # continued by one process
    _assert_same_run(tmp_path / "elastic", single, rel=1e-5)


def test_fsdp_sharded_checkpoint_resume_and_consolidation(tmp_path, single):
    run = tmp_path / "fsdp"
    _spawn(2, run, [*TINY, *SAME, "train.distributed=fsdp"], stop_after=4)
    state = load_checkpoint(run)
    assert state["iteration"] == 4 and "student" not in state and state["sharded"]["world_size"] == 2
    shards = sorted(p.name for p in (run / "shards" / "step000000004").iterdir())
    assert shards == ["rank00000-of-00002.pt", "rank00001-of-00002.pt"]
    part = torch.load(run / "shards" / "step000000004" / shards[0], weights_only=True)
    qkv = "backbone.blocks.0.attn.qkv.weight"
    assert part["state"]["student"][qkv].shape == (48, 32)  # half of the (96, 32) rows

    _spawn(2, run, resume=True)
    # gradient reduce-scatter sums in another order than one process: Adam magnifies it a little
    _assert_same_run(run, single, rel=2e-4)
    assert sorted(p.name for p in (run / "shards").iterdir()) == ["step000000004", "step000000006"]

    from dinolab import load_model

    teacher = consolidate(run)
    exported = load_model(run / "teacher_backbone.safetensors")  # gathered on rank 0 at the end of the run
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(teacher.state_dict()[name], value, rtol=0, atol=0)
    reference = load_checkpoint(single)["teacher"]
    torch.testing.assert_close(teacher.state_dict()["blocks.1.mlp.fc2.weight"],
                               reference["backbone.blocks.1.mlp.fc2.weight"], rtol=1e-3, atol=1e-5)

    out = tmp_path / "consolidated"
    proc = subprocess.run([sys.executable, "-m", "dinolab", "convert", str(run), str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = load_model(out.with_suffix(".safetensors"))
    assert again.preprocess == exported.preprocess and again.preprocess.image_size == 16  # the run's crop size
    torch.testing.assert_close(again.state_dict()[qkv[len("backbone."):]], teacher.state_dict()[qkv[len("backbone."):]])

    # one process continues the sharded run: the shards are merged into full tensors
    longer = Trainer.from_run(run, ["train.epochs=3"])
    assert longer.setup() == N
    torch.testing.assert_close(longer.teacher["backbone"].state_dict()["blocks.0.attn.qkv.weight"],
                               teacher.state_dict()["blocks.0.attn.qkv.weight"], rtol=0, atol=0)
    assert longer.fit().iterations == N + 3


# ------------------------------------------------------------------------------------------------
# the pieces, in one process


def test_crops_keyed_on_global_position_do_not_depend_on_the_split():
    mc = MultiCrop.dinov2(global_size=16, local_size=8, n_local=2)
    g = torch.Generator()
    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    sizes = torch.tensor([[40, 40], [30, 40], [40, 25], [33, 33], [40, 40], [20, 40]])
    whole = mc(images, sizes, g.manual_seed(1))
    plain = mc(images, sizes, g.manual_seed(1), torch.arange(6), 6)
    torch.testing.assert_close(plain.global_crops, whole.global_crops, rtol=0, atol=0)  # no positions: the same
    for part in (torch.tensor([1, 3, 5]), torch.tensor([4, 0])):  # a "rank" holding some of the images
        crops = mc(images[part], sizes[part], g.manual_seed(1), part, 6)
        torch.testing.assert_close(crops.global_crops, whole.global_crops[torch.cat([part, part + 6])])
        torch.testing.assert_close(crops.local_crops, whole.local_crops[torch.cat([part, part + 6])])
        assert torch.equal(crops.global_boxes, whole.global_boxes[torch.cat([part, part + 6])])


def test_keyed_ibot_masks_match_the_stratified_sampler():
    n, grid = 40, (6, 6)
    full = sample_ibot_masks_at(torch.arange(n), n, grid, 0.5, (0.1, 0.5), seed=7)
    assert torch.equal(sample_ibot_masks_at(torch.tensor([9, 3, 31]), n, grid, 0.5, (0.1, 0.5), seed=7),
                       full[[9, 3, 31]])
    masked = full.sum(1)
    assert int((masked > 0).sum()) == 20  # int(40 * 0.5) crops masked, as sample_ibot_masks
    # one crop per ratio stratum: the sorted masked counts stay within the strata of linspace(0.1, 0.5, 21)
    reference = sample_ibot_masks(n, grid, 0.5, (0.1, 0.5))
    assert int((reference.sum(1) > 0).sum()) == 20
    counts = sorted(masked[masked > 0].tolist())
    for i, c in enumerate(counts):
        assert c <= int(36 * (0.1 + 0.4 * (i + 1) / 20)) + 1


def test_chunk_rows_is_torch_chunk():
    for n in (0, 1, 5, 7, 96):
        for world in (1, 2, 3, 4):
            chunks = torch.arange(n).chunk(world) if n else ()
            for rank in range(world):
                start, length = _chunk_rows(n, world, rank)
                expected = chunks[rank].tolist() if rank < len(chunks) else []
                assert list(range(start, start + length)) == expected, (n, world, rank)


def test_metrics_jsonl_has_throughput_and_memory(single):
    records = [r for r in read_metrics(single / "metrics.jsonl") if "loss" in r]
    assert all(r["peak_mem_mb"] > 10 and r["images"] == 8 and "peak_mem_mb_per_rank" not in r for r in records)
    assert json.dumps(records)  # plain JSON
