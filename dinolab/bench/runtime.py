"""CPU inference runtimes: dinolab's PyTorch path (fp32, bf16) against ONNX Runtime (fp32, int8), same model.

For each architecture (ViT-S/14 and ViT-B/14 by default; random weights, LayerScale set to 1 as in
:mod:`dinolab.bench.embed`) the backbone is exported once with :func:`dinolab.export_onnx` (fp32 and
the int8 dynamic-quantisation variant, dynamic shapes as users get them), then four workloads embed
the same batch, interleaved in one sequence (:func:`~dinolab.bench.timing.interleaved`):

- ``torch/fp32``, ``torch/bf16``: what :func:`dinolab.embed` runs (``get_intermediate_layers`` under
  ``inference_mode`` and autocast, on cache-sized micro-batches);
- ``onnx/fp32``, ``onnx/int8``: :class:`dinolab.export.OnnxBackbone` on the whole batch (ONNX Runtime's
  CPU provider with its default threads).

Reported per workload: images/s (best call, median call, and from the median process CPU time,
which is steadier on a shared machine) and the cosine of the CLS / patch tokens to ``torch/fp32``.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import torch

MODELS = ("dinov2_vits14", "dinov2_vitb14")
WORKLOADS = ("torch/fp32", "torch/bf16", "onnx/fp32", "onnx/int8")


@dataclass(frozen=True)
class RuntimeSize:
    batch: int = 8
    image_size: int = 224
    depth: int | None = None
    label: str = "full"


FULL = RuntimeSize()
QUICK = RuntimeSize(batch=2, image_size=56, depth=1, label="quick")


def _model(name: str, size: RuntimeSize, seed: int):
    from .embed import bench_model

    return bench_model(name, size.depth, seed).eval()


def _torch_fn(model, x, precision: str, outputs: dict, key: str):
    from ..device import autocast
    from ..eval.microbatch import in_micro_batches, micro_batch_size

    chunk = micro_batch_size(model, tuple(x.shape[-2:]), precision, "cpu", len(x))

    def fn():
        with torch.inference_mode(), autocast(torch.device("cpu"), precision):
            (patches, cls), = in_micro_batches(lambda c: model.get_intermediate_layers(c, 1, return_class_token=True),
                                               x, chunk)
        outputs[key] = (cls.float(), patches.float())
    return fn


def _onnx_fn(backbone, x, outputs: dict, key: str):
    def fn():
        out = backbone.forward_features(x)
        outputs[key] = (out["cls"], out["patches"])
    return fn


def _cosine(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    c = torch.nn.functional.cosine_similarity(a.double().flatten(0, -2), b.double().flatten(0, -2), dim=-1)
    return {"mean": float(c.mean()), "min": float(c.min())}


def run(models: tuple[str, ...] = MODELS, *, size: RuntimeSize = FULL, repeats: int = 3, warmup: int = 1,
        seed: int = 0) -> dict[str, Any]:
    """Images/s and fidelity of the four CPU workloads per model (see the module docstring); JSON-able."""
    from ..export import export_onnx, load_onnx
    from .timing import interleaved

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size.batch, 3, size.image_size, size.image_size, generator=g)
    workloads, outputs, entries = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="dinolab-bench-onnx-") as tmp:
        for i, name in enumerate(models):
            model = _model(name, size, seed)
            res = export_onnx(model, f"{tmp}/{i}.onnx", image_size=size.image_size, int8=True, verify_export=False)
            sessions = {v: load_onnx(p) for v, p in res.paths.items()}
            for p in ("fp32", "bf16"):
                workloads[f"{name}/torch/{p}"] = _torch_fn(model, x, p, outputs, f"{name}/torch/{p}")
            for v in ("fp32", "int8"):
                workloads[f"{name}/onnx/{v}"] = _onnx_fn(sessions[v], x, outputs, f"{name}/onnx/{v}")
            entries.append({"model": name, "params": sum(p.numel() for p in model.parameters())})
        meas = interleaved(workloads, repeats=repeats, warmup=warmup, device="cpu")
    for entry in entries:
        name = entry["model"]
        ref = outputs[f"{name}/torch/fp32"]
        for w in WORKLOADS:
            key = f"{name}/{w}"
            cls, patches = outputs[key]
            entry[w] = {**meas[key].throughput(size.batch), "cosine_cls": _cosine(cls, ref[0]),
                        "cosine_patches": _cosine(patches, ref[1])}
        base = entry["torch/fp32"]
        for w in WORKLOADS:
            e = entry[w]
            e["vs_torch_fp32"] = e["images_per_s"] / base["images_per_s"]
            if e["images_per_cpu_s"] and base["images_per_cpu_s"]:
                e["vs_torch_fp32_cpu"] = e["images_per_cpu_s"] / base["images_per_cpu_s"]
    return {"benchmark": "runtime", "size": asdict(size), "repeats": repeats, "models": entries}


def summary(result: dict[str, Any]) -> str:
    """One row per model and workload: images/s (best, median, CPU time), speed vs torch fp32, cosines."""
    from .report import table

    rows = []
    for entry in result["models"]:
        for w in WORKLOADS:
            e = entry[w]
            rows.append({"model": entry["model"], "workload": w, "ips": e["images_per_s"],
                         "med": e["images_per_s_median"], "cpu": e["images_per_cpu_s"], "vs": e["vs_torch_fp32"],
                         "vs_cpu": e.get("vs_torch_fp32_cpu"), "cls": e["cosine_cls"]["min"],
                         "pat": e["cosine_patches"]["min"]})
    cols = [("model", "model", "{}"), ("workload", "runtime/precision", "{}"), ("ips", "img/s", "{:.2f}"),
            ("med", "img/s(med)", "{:.2f}"), ("cpu", "img/cpu-s", "{:.2f}"), ("vs", "vs torch fp32", "{:.2f}x"),
            ("vs_cpu", "vs (cpu)", "{:.2f}x"), ("cls", "cos cls min", "{:.4f}"), ("pat", "cos patch min", "{:.4f}")]
    s = result["size"]
    head = (f"CPU runtimes: batch {s['batch']}, {s['image_size']} px" + (f", depth {s['depth']}" if s.get("depth") else "")
            + f", {result['repeats']} interleaved rounds")
    legend = ("img/s from the best call; (med) the median call; img/cpu-s from the median process CPU time per call "
              "(steadier when other jobs share the CPU); cosines to torch fp32 on the same images")
    return "\n".join([head, table(rows, cols), legend])
