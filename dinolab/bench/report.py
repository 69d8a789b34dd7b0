"""Machine description and plain-text tables of benchmark results."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any, Sequence

import torch


def _lscpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU model, core and thread counts, SIMD/bf16 flags, load average, library versions, GPU name."""
    from ..device import cpu_has_native_bf16

    flags = _cpu_flags()
    info: dict[str, Any] = {
        "cpu": _lscpu_model() or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16", "asimd"}),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__, "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    device = torch.device(device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Rows as an aligned text table; ``columns`` are ``(key, header, format)`` (format like ``"{:.2f}"``).

    Missing values print as ``-``.

    Examples:
        >>> print(table([{"a": 1.234, "b": "x"}, {"a": None, "b": "yy"}], [("a", "A", "{:.1f}"), ("b", "B", "{}")]))
        A    B
        ---  --
        1.2  x
        -    yy
    """
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def gflops(x: float | None) -> float | None:
    return None if x is None else x / 1e9


def mib(x: int | None) -> float | None:
    return None if x is None else x / 2**20


def peaks_line(peaks: dict[str, dict[str, Any]]) -> str:
    """``matmul peak (same run): fp32 82.1 GFLOP/s (median 80.0; n=2048 nt), bf16 ...``."""
    parts = [f"{p} {v['flops_per_s'] / 1e9:.2f} GFLOP/s (median {v['flops_per_s_median'] / 1e9:.2f}; "
             f"n={v['n']} {v['layout']})" for p, v in peaks.items()]
    return "matmul peak, same run: " + ", ".join(parts)


def machine_line(info: dict[str, Any]) -> str:
    load = info.get("load_average")
    return (f"{info['cpu']}, {info['cpus']} CPUs ({info['torch_threads']} torch threads), flags "
            f"{' '.join(info['cpu_flags']) or '-'}, native bf16: {'yes' if info['cpu_native_bf16'] else 'no'}"
            + (f", GPU {info['gpu']}" if info.get("gpu") else "")
            + f"; torch {info['torch']}"
            + (f", transformers {info['transformers']}" if info.get("transformers") else "")
            + (f"; load average {load[0]:.1f}" if load else ""))
