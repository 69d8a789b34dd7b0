"""Embedding benchmark: dinolab against Hugging Face transformers' ``Dinov2Model``, same weights.

For each architecture (ViT-S/14 and ViT-B/14 by default) a dinolab model with random weights is
written as a Hugging Face folder (:func:`dinolab.models.export_hf`), then loaded twice from that
folder: by ``transformers.AutoModel.from_pretrained(folder, attn_implementation="sdpa")`` and by
:func:`dinolab.load_model` (which adopts the HF position-embedding resize rule for HF folders, so
both compute the same function: their fp32 outputs are compared). Random weights cannot stand for
trained ones in every respect; LayerScale is set to 1 (not its 1e-5 initial value) so that every
block contributes to the features, as in a trained model.

Timed per batch, interleaved with each other and with the matmul peaks:

- dinolab: ``get_intermediate_layers(x, 1, return_class_token=True)`` under ``inference_mode`` and
  :func:`dinolab.device.autocast`, on cache-sized micro-batches on CPU (what :func:`dinolab.embed`
  runs; :mod:`dinolab.eval.microbatch`);
- transformers: ``model(pixel_values=x)`` under the same contexts on the whole batch, and (``hf_micro``,
  where dinolab splits the batch) on the same micro-batches, to show how much of the ratio they explain;

in fp32 and bf16 (autocast). bf16 runs on a smaller batch when the full batch is predicted to take
longer than the budget (an emulated dtype: bf16 on a CPU without native bf16 instructions), and is
skipped if even one image would. The bf16 features are compared with fp32 ones of the same images
(cosine similarity of the CLS and of the patch tokens).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import DinolabError

MODELS = ("dinov2_vits14", "dinov2_vitb14")


@dataclass(frozen=True)
class EmbedSize:
    """Batch, image size and (optionally) a reduced depth for the embedding benchmark."""

    batch: int = 32
    image_size: int = 224
    depth: int | None = None
    label: str = "full"


FULL = EmbedSize()
QUICK = EmbedSize(batch=4, image_size=112, depth=2, label="quick")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise DinolabError("the embedding benchmark compares with Hugging Face transformers, which is not "
                           "installed; pip install 'dinolab[hf]' (or run the other benchmarks)") from None
    return transformers


def bench_model(name: str, depth: int | None, seed: int):
    """A seeded random ``create_model(name)`` (at ``depth`` blocks if given) with LayerScale set to 1, so
    that every block contributes as in a trained model (see the module docstring)."""
    from ..models import create_model

    torch.manual_seed(seed)
    model = create_model(name, **({"depth": depth} if depth else {}))
    with torch.no_grad():
        for blk in model.blocks:
            for ls in (blk.ls1, blk.ls2):
                if hasattr(ls, "gamma"):
                    ls.gamma.fill_(1.0)
    return model


def build_pair(name: str, size: EmbedSize, folder: str, seed: int = 0):
    """``(dinolab_model, hf_model)`` in eval mode, both loaded from one HF folder written to ``folder``."""
    from ..models import export_hf, load_model

    transformers = _transformers()
    src = bench_model(name, size.depth, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the resize-rule notice: the HF-loaded dinolab model uses HF's rule
        export_hf(src, folder)
        ours = load_model(folder, pos_embed_resize="hf")  # the rule HF applies
        hf = transformers.AutoModel.from_pretrained(folder, attn_implementation="sdpa")
    return ours.eval(), hf.eval()


def _ours_fn(model, x, device, precision, chunk):
    from ..device import autocast
    from ..eval.microbatch import in_micro_batches

    def fn():
        with torch.inference_mode(), autocast(device, precision):
            (patches, cls), = in_micro_batches(lambda c: model.get_intermediate_layers(c, 1, return_class_token=True),
                                               x, chunk)
        return cls, patches
    return fn


def _hf_fn(model, x, device, precision, n_prefix, chunk=None):
    from ..device import autocast
    from ..eval.microbatch import in_micro_batches

    def forward(c):
        out = model(pixel_values=c)
        return out.pooler_output, out.last_hidden_state[:, n_prefix:]

    def fn():
        with torch.inference_mode(), autocast(device, precision):
            return in_micro_batches(forward, x, chunk or len(x))
    return fn


def _keeping(outputs: dict, key: str, fn):
    """``fn`` that also stores its latest result in ``outputs[key]`` (features of the timed calls)."""
    def wrapped():
        outputs[key] = fn()
    return wrapped


def _cosine(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    c = torch.nn.functional.cosine_similarity(a.float().flatten(0, -2), b.float().flatten(0, -2), dim=-1)
    return {"mean": float(c.mean()), "min": float(c.min())}


def run(models: tuple[str, ...] = MODELS, *, size: EmbedSize = FULL, device: str = "auto",
        precisions: tuple[str, ...] = ("fp32", "bf16"), repeats: int = 3, warmup: int = 1,
        budget_s: float = 30.0, seed: int = 0) -> dict[str, Any]:
    """Images/s of dinolab and transformers per model and precision, matmul peaks, bf16 fidelity.

    Returns a JSON-able dict: ``peaks`` and ``models``, each with ``fp32`` / ``bf16`` entries holding
    ``ours`` and ``hf`` timings (images/s best and median), ``ratio`` (ours over HF at the same
    precision), ``vs_hf_fp32`` (ours over HF fp32) and, for bf16, ``cosine`` of the features to fp32.
    """
    from ..device import resolve_device, resolve_precision
    from ..errors import ConfigError
    from ..eval.microbatch import micro_batch_size
    from .flops import vit_forward_flops
    from .peak import peak_result, probe_matmul
    from .timing import interleaved

    dev = resolve_device(device)
    precs, skipped = [], {}
    for p in precisions:
        try:
            r = resolve_precision(p, dev)
            precs.append(r) if r not in precs else None
        except ConfigError as e:
            skipped[p] = str(e)
    if "fp32" not in precs:
        precs.insert(0, "fp32")  # the reference for the others
    matmuls = {p: probe_matmul(dev, p) for p in precs}
    rates = {p: matmuls[p].probed_rate for p in precs}
    workloads: dict[str, Any] = {f"matmul/{p}": matmuls[p].fn for p in precs}
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size.batch, 3, size.image_size, size.image_size, generator=g).to(dev)
    results, outputs = [], {}
    with tempfile.TemporaryDirectory(prefix="dinolab-bench-hf-") as tmp:
        for i, name in enumerate(models):
            ours, hf = build_pair(name, size, f"{tmp}/{i}", seed)
            ours, hf = ours.to(dev), hf.to(dev)
            fpi = vit_forward_flops(ours.config, (size.image_size, size.image_size))
            n_prefix = 1 + ours.num_register_tokens
            entry: dict[str, Any] = {"model": name, "params": sum(p.numel() for p in ours.parameters()),
                                     **asdict(size), "flops_per_image": fpi}
            for p in precs:
                batch, note = size.batch, None
                predicted = batch * fpi / rates[p]
                if predicted > budget_s:
                    batch = int(budget_s * rates[p] / fpi)
                    note = (f"batch {size.batch} predicted at {predicted:.0f} s per call at the probed {p} matmul "
                            f"rate of {rates[p] / 1e9:.2f} GFLOP/s; ")
                    if batch < 1:
                        entry[p] = {"skipped": note + f"even one image exceeds the {budget_s:.0f} s budget"}
                        continue
                    note += f"measured on batch {batch}"
                xb = x[:batch]
                chunk = micro_batch_size(ours, size.image_size, p, dev, batch)
                sides = [("ours", _ours_fn(ours, xb, dev, p, chunk)), ("hf", _hf_fn(hf, xb, dev, p, n_prefix))]
                if chunk < batch:  # what HF gains from the same micro-batches, for a fair reading of the ratio
                    sides.append(("hf_micro", _hf_fn(hf, xb, dev, p, n_prefix, chunk)))
                for side, fn in sides:
                    key = f"{name}/{p}/{side}"
                    workloads[key] = _keeping(outputs, key, fn)
                entry[p] = {"batch": batch, "micro_batch": chunk, "note": note}
            results.append(entry)
        meas = interleaved(workloads, repeats=repeats, warmup=warmup, device=dev)
    peaks = {p: peak_result(matmuls[p], meas[f"matmul/{p}"]) for p in precs}
    for entry in results:
        name = entry["model"]
        for p in precs:
            e = entry[p]
            if "skipped" in e:
                continue
            for side in ("ours", "hf", "hf_micro"):
                if f"{name}/{p}/{side}" in meas:
                    e[side] = meas[f"{name}/{p}/{side}"].throughput(e["batch"])
            e["ratio"] = e["ours"]["images_per_s"] / e["hf"]["images_per_s"]
            if "hf_micro" in e:
                e["ratio_vs_hf_micro"] = e["ours"]["images_per_s"] / e["hf_micro"]["images_per_s"]
            e["ratio_median"] = e["ours"]["images_per_s_median"] / e["hf"]["images_per_s_median"]
            if e["ours"]["images_per_cpu_s"] and e["hf"]["images_per_cpu_s"]:  # steadier on a shared CPU
                e["ratio_cpu_time"] = e["ours"]["images_per_cpu_s"] / e["hf"]["images_per_cpu_s"]
            e["flops_per_s"] = entry["flops_per_image"] * e["ours"]["images_per_s"]
            e["mfu"] = e["flops_per_s"] / peaks[p]["flops_per_s"]
        fp32 = entry["fp32"]
        ref = {side: outputs[f"{name}/fp32/{side}"] for side in ("ours", "hf")}
        fp32["max_abs_diff_vs_hf"] = {"cls": float((ref["ours"][0] - ref["hf"][0]).abs().max()),
                                      "patches": float((ref["ours"][1] - ref["hf"][1]).abs().max())}
        for p in precs:
            e = entry[p]
            if p == "fp32" or "skipped" in e:
                continue
            e["vs_hf_fp32"] = e["ours"]["images_per_s"] / fp32["hf"]["images_per_s"]
            e["vs_hf_fp32_median"] = e["ours"]["images_per_s_median"] / fp32["hf"]["images_per_s_median"]
            if "hf_micro" in fp32:
                e["vs_hf_micro_fp32"] = e["ours"]["images_per_s"] / fp32["hf_micro"]["images_per_s"]
            b = e["batch"]
            e["cosine"] = {}
            for side in ("ours", "hf"):
                lo_cls, lo_pat = outputs[f"{name}/{p}/{side}"]
                e["cosine"][f"{side}_cls"] = _cosine(lo_cls, ref[side][0][:b])
                e["cosine"][f"{side}_patches"] = _cosine(lo_pat, ref[side][1][:b])
    return {"benchmark": "embed", "device": str(dev), "size": asdict(size), "repeats": repeats, "peaks": peaks,
            "models": results, "skipped_precisions": skipped}


def summary(result: dict[str, Any]) -> str:
    """The result as a table: images/s of both sides, their ratio, the bf16 fidelity."""
    from .report import peaks_line, table

    rows = []
    for entry in result["models"]:
        for p in result["peaks"]:
            e = entry.get(p, {})
            row = {"model": entry["model"], "precision": p, "note": e.get("skipped") or e.get("note")}
            if "ours" in e:
                cos = e.get("cosine", {})
                row.update(batch=e["batch"], micro=e.get("micro_batch"), ours=e["ours"]["images_per_s"],
                           hf=e["hf"]["images_per_s"], hf_micro=e.get("hf_micro", {}).get("images_per_s"),
                           ratio_micro=e.get("ratio_vs_hf_micro"),
                           ratio=e["ratio"], ratio_median=e["ratio_median"], ratio_cpu=e.get("ratio_cpu_time"),
                           vs_hf_fp32=e.get("vs_hf_fp32"),
                           cos=cos.get("ours_cls", {}).get("min"), mfu=100 * e["mfu"])
            rows.append(row)
    cols = [("model", "model", "{}"), ("precision", "prec", "{}"), ("batch", "batch", "{}"), ("micro", "micro", "{}"),
            ("ours", "dinolab img/s", "{:.2f}"), ("hf", "HF img/s", "{:.2f}"), ("ratio", "ratio", "{:.2f}x"),
            ("ratio_median", "ratio(med)", "{:.2f}x"), ("ratio_cpu", "ratio(cpu)", "{:.2f}x"),
            ("vs_hf_fp32", "vs HF fp32", "{:.2f}x"), ("hf_micro", "HF micro img/s", "{:.2f}"),
            ("ratio_micro", "ratio vs HF micro", "{:.2f}x"),
            ("cos", "cos min", "{:.4f}"), ("mfu", "MFU%", "{:.0f}"), ("note", "note", "{}")]
    size = result["size"]
    head = (f"embedding: batch {size['batch']}, {size['image_size']} px"
            + (f", depth {size['depth']}" if size.get("depth") else "") + f", {result['repeats']} interleaved rounds")
    legend = ("ratio: dinolab/HF images/s from the best call of each; (med): from the median calls; (cpu): "
              "from the median process CPU time per call (steadier when other jobs share the CPU); micro: images "
              "per forward call (dinolab's cache-sized micro-batches on CPU); HF micro: transformers run on the "
              "same micro-batches (not what it does by itself)")
    return "\n".join([head, peaks_line(result["peaks"]), table(rows, cols), legend])
