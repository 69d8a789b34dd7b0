"""Collapse monitor signatures and the resumable metrics log."""

from __future__ import annotations

import json
import math

from dinolab.runtime.metrics_log import MetricsLog, read_metrics
from dinolab.train.monitor import CollapseMonitor


def test_uniform_collapse_after_patience_steps():
    lnk = math.log(1024)
    mon = CollapseMonitor(1024, patience=3)
    assert [mon.update(0.99 * lnk, 0.0) for _ in range(2)] == [None, None]
    message = mon.update(0.99 * lnk, 0.0)
    assert message.startswith("uniform collapse") and "teacher.teacher_temp" in message
    assert mon.update(0.99 * lnk, 0.0) is None  # warned once per episode
    mon.update(1.0, 2.0)  # healthy: sharp targets spread over prototypes
    assert [mon.update(0.99 * lnk, 0.0) for _ in range(3)][-1] is not None  # warns again after recovering


def test_one_prototype_collapse_and_healthy_statistics():
    lnk = math.log(1024)
    mon = CollapseMonitor(1024, patience=2)
    # every row on one prototype: batch-mean perplexity exp(lnK - KL) = 1
    assert mon.signature(entropy=0.01, kl_uniform=lnk) == "one_prototype"
    assert mon.signature(entropy=1.0, kl_uniform=lnk - math.log(100)) is None  # 100 prototypes used
    mon.update(0.01, lnk)
    assert "centering" in mon.update(0.01, lnk)


def test_metrics_truncate_drops_later_steps_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(1, 6):
        log.write({"step": step, "loss": float(step)})
    log.write({"step": 5, "loss": float("nan")})
    log.close()
    with open(path, "a") as f:
        f.write('{"step": 6, "lo')  # killed while writing
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 5]
    assert read_metrics(path)[-1]["loss"] == "nan"
    MetricsLog(path).truncate(3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_distillation_advice_is_about_the_frozen_teachers_targets():
    lnk = math.log(1024)
    mon = CollapseMonitor(1024, patience=1, distillation=True)
    message = mon.update(0.99 * lnk, 0.0)
    assert message.startswith("uniform collapse") and "distill.relation_loss_weight" in message
    assert "momentum" not in message
    message = mon.update(0.01, lnk)
    assert message.startswith("one_prototype collapse") and "sinkhorn_knopp" in message
    assert "momentum_teacher" not in message  # a frozen teacher has no EMA to slow down
