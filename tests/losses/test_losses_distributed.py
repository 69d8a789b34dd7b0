"""Two gloo processes, each with part of the batch, must give the single-process result on the whole batch."""

import datetime

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dinolab.losses import DINOLoss, iBOTPatchLoss, sinkhorn_knopp

K = 6
SHARDS = {  # rows of the full batch that each rank holds
    "even": [slice(0, 4), slice(4, 8)],
    "uneven": [slice(0, 2), slice(2, 7)],  # iBOT: ranks hold different numbers of masked tokens
    "empty": [slice(0, 0), slice(0, 7)],  # a rank with no masked token at all
}


def full_data():
    g = torch.Generator().manual_seed(0)
    return {
        "sk_logits": torch.randn(8, K, generator=g) * 3,
        "ibot_logits": torch.randn(7, K, generator=g) * 3,
        "dino_teacher": torch.randn(2, 6, K, generator=g),  # 2 global views x B=6
    }


def _worker(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        data, out = full_data(), {}
        out["sk_even"] = sinkhorn_knopp(data["sk_logits"][SHARDS["even"][rank]], 0.1)
        for name in ("uneven", "empty"):
            rows = data["ibot_logits"][SHARDS[name][rank]]
            out[f"sk_{name}"] = sinkhorn_knopp(rows, 0.1)
            ibot = iBOTPatchLoss(K)
            ibot.update_center(rows)
            out[f"ibot_center_{name}"] = ibot.center
        half = data["dino_teacher"][:, rank * 3:(rank + 1) * 3]  # half of the batch of each view
        dino = DINOLoss(K)
        dino.update_center(half)
        out["dino_center"] = dino.center
        out["dino_sk_targets"] = DINOLoss(K, centering="sinkhorn_knopp").teacher_targets(half, 0.07)
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    data = full_data()
    assert not torch.distributed.is_initialized()

    torch.testing.assert_close(torch.cat([r["sk_even"] for r in ranks]), sinkhorn_knopp(data["sk_logits"], 0.1))
    for name in ("uneven", "empty"):
        sharded = torch.cat([r[f"sk_{name}"] for r in ranks])
        torch.testing.assert_close(sharded, sinkhorn_knopp(data["ibot_logits"], 0.1))
        expected_center = 0.1 * data["ibot_logits"].mean(0).view(1, 1, K)  # mean over all masked tokens
        for r in ranks:
            torch.testing.assert_close(r[f"ibot_center_{name}"], expected_center)

    single = DINOLoss(K)
    single.update_center(data["dino_teacher"])
    torch.testing.assert_close(single.center, 0.1 * data["dino_teacher"].reshape(-1, K).mean(0, keepdim=True))
    for r in ranks:
        torch.testing.assert_close(r["dino_center"], single.center)
    expected_sk = DINOLoss(K, centering="sinkhorn_knopp").teacher_targets(data["dino_teacher"], 0.07)
    torch.testing.assert_close(torch.cat([r["dino_sk_targets"] for r in ranks], dim=1), expected_sk)
