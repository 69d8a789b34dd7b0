"""Interleaved timing on a fake clock (no real timing), peak memory, matmul workloads, tables."""

import pytest
import torch

from dinolab.bench import timing
from dinolab.bench.memory import PeakMemory
from dinolab.bench.peak import matmul_workload, peak_result, probe_matmul
from dinolab.bench.report import table


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """Wall clock advanced by the workloads; the CPU clock runs at half its pace (a CPU shared with one other job)."""
    c = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", c)
    monkeypatch.setattr(timing.time, "process_time", lambda: c.now / 2)
    return c


def test_interleaved_order_counts_and_times(clock):
    calls = []

    def work(name, cost):
        def fn():
            calls.append(name)
            clock.now += cost
        return fn

    m = timing.interleaved({"a": work("a", 1.0), "b": work("b", 3.0), "c": work("c", 0.5)}, repeats=3, warmup=1)
    # warm-up a b c, then rounds a b c / c b a / a b c
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")
    assert m["a"].seconds == [1.0, 1.0, 1.0] and m["b"].seconds == [3.0] * 3 and m["c"].seconds == [0.5] * 3
    assert list(m) == ["a", "b", "c"]
    assert m["b"].cpu_seconds == [1.5] * 3
    t = m["b"].throughput(6)
    assert t["images_per_s"] == 2.0 and t["images_per_s_median"] == 2.0 and t["best_s"] == 3.0
    assert t["cpu_median_s"] == 1.5 and t["images_per_cpu_s"] == 4.0


def test_best_and_median_follow_the_calls(clock):
    costs = iter([5.0, 1.0, 3.0, 2.0])

    def fn():
        clock.now += next(costs)

    m = timing.interleaved({"x": fn}, repeats=4, warmup=0)["x"]
    assert m.seconds == [5.0, 1.0, 3.0, 2.0]
    assert m.best == 1.0 and m.median == 2.5


def test_max_seconds_ends_after_a_complete_round(clock):
    def fn():
        clock.now += 2.0

    m = timing.interleaved({"a": fn, "b": fn}, repeats=10, warmup=0, max_seconds=5.0)
    # round 1 ends at 4 s, round 2 at 8 s > 5 s: stop with both sides measured equally often
    assert len(m["a"].seconds) == len(m["b"].seconds) == 2


def test_repeats_must_be_positive():
    with pytest.raises(ValueError):
        timing.interleaved({"a": lambda: None}, repeats=0)


def test_memory_is_measured_per_workload():
    def alloc(n):
        def fn():
            x = torch.ones(n)  # n float32
            return float(x[0])
        return fn

    m = timing.interleaved({"small": alloc(1 << 10), "big": alloc(1 << 24)}, repeats=1, warmup=1, memory=True)
    assert m["big"].memory_method in ("rss_hwm", "maxrss_delta", "cuda_allocated")
    if m["big"].memory_method == "rss_hwm":  # Linux: a 64 MiB tensor must show up
        assert m["big"].peak_bytes >= 60 * 2**20
        assert m["small"].peak_bytes < 16 * 2**20


def test_peak_memory_counts_tensors_alive_together():
    with PeakMemory("cpu") as mem:
        a = torch.ones(1 << 23)  # 32 MiB
        b = a * 2  # another 32 MiB, both alive
        del a, b
    if mem.method == "rss_hwm":
        assert 60 * 2**20 <= mem.peak_bytes < 100 * 2**20


@pytest.mark.parametrize("layout", ["nn", "nt"])
def test_matmul_workload_computes_the_product(layout):
    w = matmul_workload("cpu", "fp32", 16, layout=layout, seed=3)
    out = w.fn()
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(16, 16, generator=g), torch.randn(16, 16, generator=g)
    expected = a @ (b if layout == "nn" else b.t())
    assert torch.allclose(out, expected, atol=1e-5)
    assert w.flops == 2 * 16 ** 3


def test_probe_respects_the_size_cap_and_reports_a_rate():
    w = probe_matmul("cpu", "fp32", target_seconds=1e9, min_n=32, max_n=64)
    assert w.n == 64 and w.layout in ("nn", "nt") and w.probed_rate > 0
    m = timing.Measurement("mm", [0.5, 0.25, 1.0], cpu_seconds=[1.0, 0.5, 2.0])
    r = peak_result(w, m)
    assert r["flops_per_s"] == w.flops / 0.25 and r["flops_per_s_median"] == w.flops / 0.5
    assert r["flops_per_cpu_s"] == w.flops / 1.0


def test_table_aligns_and_marks_missing_values():
    text = table([{"a": 1.234, "b": "x"}, {"a": None, "b": "long"}], [("a", "A", "{:.1f}"), ("b", "B", "{}")])
    assert text.splitlines() == ["A    B", "---  ----", "1.2  x", "-    long"]
