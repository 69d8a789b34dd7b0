"""Align a text encoder to a frozen DINO backbone (LiT / dino.txt: "learn to see first, talk later").

:func:`align` trains a :class:`~dinolab.text.vision_head.VisionHead` on the frozen backbone's
``concat(CLS, mean patch)`` features and a :class:`~dinolab.text.text_encoder.TextEncoder` from
scratch on the pairs' captions, with the symmetric CLIP loss and a learnable temperature (pairs
of a batch with identical captions count as matches of each other, see
:func:`~dinolab.text.clip_loss.clip_loss`'s ``groups``). The
backbone never changes: it has ``requires_grad=False``, stays in eval mode, and its state-dict
fingerprint is checked to be bit-identical after training.

Because nothing augments the images, the backbone runs **once per image**: with a head without
blocks only the pooled ``(2D,)`` feature of each image is kept; with blocks the tokens are kept
when they fit in ``cache_limit_bytes`` and recomputed per batch otherwise.

The run folder ``out`` receives the aligned model (see :mod:`dinolab.text.aligned`),
``metrics.jsonl`` (one record per epoch: loss, lr, logit scale, and zero-shot accuracy on the
pairs' own classes when they have them), ``checkpoint.pt`` (written atomically after every epoch,
``resume=True`` continues from it) and ``skipped.log`` when rows or images were left out.

Captions are augmented with word dropout (each word left out with probability
``word_dropout``, keeping at least one), so that short prompts such as "a circle." land near the
full captions they are part of.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, DinolabError
from ..io import atomic_save_text, check_writable
from .aligned import CONFIG_FILE, AlignedModel, save_aligned, state_fingerprint
from .clip_loss import MAX_LOGIT_SCALE, clip_loss
from .pairs import Pairs, load_pairs
from .text_encoder import TextEncoder
from .tokenizer import WordTokenizer
from .vision_head import VisionHead, pooled_features

logger = logging.getLogger("dinolab.text")

SKIPPED_LOG = "skipped.log"
_TOKEN_KEYS = ("cls", "registers", "patches")


def align(weights_or_model: str | os.PathLike | nn.Module, pairs: str | os.PathLike | Pairs, *,
          out: str | os.PathLike | None = None, epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
          weight_decay: float = 1e-4, warmup_epochs: float = 1.0, embed_dim: int = 256, head_blocks: int = 0,
          head_hidden_dim: int = 1024, text_width: int = 128, text_depth: int = 2, text_heads: int = 4,
          causal: bool = True, word_dropout: float = 0.3, image_size: int = 224, device: str = "auto",
          precision: str = "auto", num_workers: int = 0, seed: int = 0, copy_backbone: bool = True,
          force: bool = False, resume: bool = False, progress: bool = True, max_bad_fraction: float = 0.1,
          cache_limit_bytes: int = 2 << 30) -> AlignedModel:
    """Train a vision head and a text encoder on a frozen backbone; returns the :class:`AlignedModel`.

    Args:
        weights_or_model: backbone weights (any file :func:`dinolab.load_model` reads) or a model.
        pairs: a CSV (``image,caption``), ``builtin:shapes[...]``, or :class:`~dinolab.text.pairs.Pairs`.
        out: run folder for the aligned model, metrics and checkpoint (None: write nothing).
        epochs, batch_size, lr, weight_decay, warmup_epochs: AdamW (betas 0.9/0.98) with linear
            warm-up then cosine decay to ``lr/100``, one step per batch.
        embed_dim: joint embedding dimension.
        head_blocks, head_hidden_dim: vision head shape (see :class:`VisionHead`).
        text_width, text_depth, text_heads, causal: text encoder shape (see :class:`TextEncoder`).
        word_dropout: probability of leaving a caption word out during training.
        image_size: images are resized (shorter side ``image_size*256/224``) and centre-cropped to this.
        device, precision: see :mod:`dinolab.device`; the backbone runs under autocast, the heads in fp32.
        num_workers: decoding processes for the one pass over the images.
        copy_backbone: save a copy of the backbone in ``out`` (else only a reference to the weights path).
        force: replace an earlier run in ``out``. resume: continue the run in ``out`` from its checkpoint.
        progress: progress bars on a terminal.
        max_bad_fraction: stop if more than this share of the images cannot be read.
        cache_limit_bytes: largest token cache for a head with blocks.

    Examples:
        >>> import dinolab
        >>> bb = dinolab.create_model("vit_tiny", img_size=32, patch_size=16, depth=1)
        >>> m = align(bb, "builtin:shapes?n=16&size=32", epochs=1, batch_size=8, image_size=32,
        ...           device="cpu", progress=False)
        >>> m.encode_text("a red circle").shape
        torch.Size([1, 256])
    """
    from tqdm.auto import tqdm

    from ..device import resolve_device, resolve_precision
    from ..models.weights import load_model
    from ..runtime.checkpoint import load_checkpoint, save_checkpoint
    from ..runtime.metrics_log import MetricsLog
    from ..runtime.schedules import cosine_schedule

    _check_args(epochs=epochs, batch_size=batch_size, lr=lr, embed_dim=embed_dim, image_size=image_size,
                word_dropout=word_dropout, head_blocks=head_blocks)
    run_dir = Path(out) if out is not None else None
    if run_dir is not None:
        _check_run_dir(run_dir, force=force, resume=resume)
    elif resume:
        raise ConfigError("resume=True needs the run folder: pass out=DIR")
    if isinstance(weights_or_model, nn.Module):
        backbone, backbone_path = weights_or_model, None
        if not copy_backbone:
            raise ConfigError("copy_backbone=False needs backbone weights given as a path, not a model object")
    else:
        backbone, backbone_path = load_model(weights_or_model), Path(weights_or_model)
    pairs = pairs if isinstance(pairs, Pairs) else load_pairs(pairs)

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    backbone.requires_grad_(False).eval().to(dev)
    fingerprint = state_fingerprint(backbone)
    torch.manual_seed(seed)
    head = VisionHead(backbone.embed_dim, embed_dim, num_blocks=head_blocks, num_heads=_heads_for(backbone),
                      hidden_dim=head_hidden_dim)

    features = _FeatureSource(backbone, pairs, image_size=image_size, needs_tokens=head.needs_tokens, device=dev,
                              precision=prec, num_workers=num_workers, progress=progress,
                              max_bad_fraction=max_bad_fraction, cache_limit_bytes=cache_limit_bytes)
    skipped = list(pairs.skipped) + features.bad
    captions = [pairs.captions[i] for i in features.kept]
    if len(captions) < 2:
        raise DataError(f"{pairs.source}: only {len(captions)} usable pair(s); contrastive training needs at least 2")

    state = load_checkpoint(run_dir) if resume else None
    if state is not None and state.get("backbone_fingerprint") != fingerprint:
        raise DinolabError(f"the checkpoint in {run_dir} was trained on another backbone; resume with the same "
                           f"--weights, or start over with --force")
    tokenizer = (WordTokenizer(state["vocab"], int(state["context_length"])) if state is not None
                 else WordTokenizer.build(captions))
    text = TextEncoder(len(tokenizer), embed_dim, context_length=tokenizer.context_length, width=text_width,
                       depth=text_depth, num_heads=text_heads, causal=causal, eos_id=tokenizer.eos_id,
                       pad_id=tokenizer.pad_id)
    model = AlignedModel(backbone, head, text, tokenizer, image_size=image_size,
                         backbone_fingerprint=fingerprint).to(dev)
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    word_ids = [tokenizer.token_ids(c) for c in captions]
    caption_ids = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    groups = torch.tensor([caption_ids[c] for c in captions], device=dev)
    n = len(captions)
    steps_per_epoch = max(1, n // batch_size) if n >= batch_size else 1
    total_steps = epochs * steps_per_epoch
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total_steps - 1)
    start_epoch = 0
    if state is not None:
        model.vision_head.load_state_dict(state["vision_head"])
        model.text_encoder.load_state_dict(state["text_encoder"])
        model.logit_scale.data.copy_(state["logit_scale"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
    metrics = MetricsLog(run_dir / "metrics.jsonl") if run_dir is not None else None
    if metrics is not None:
        metrics.truncate(start_epoch * steps_per_epoch)
    eval_classes = features.classes if features.cached else None
    hyper = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                 word_dropout=word_dropout, seed=seed, pairs=pairs.source, n_pairs=n, precision=prec)

    rng = random.Random(seed + 7919 * start_epoch)
    step = start_epoch * steps_per_epoch
    try:
        for epoch in range(start_epoch, epochs):
            model.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
            batches = [order[i:i + batch_size] for i in range(0, steps_per_epoch * batch_size, batch_size)]
            losses = []
            bar = tqdm(batches, desc=f"align epoch {epoch + 1}/{epochs}", unit="batch",
                       disable=None if progress else True, leave=False)
            for idx in bar:
                for g in optimizer.param_groups:
                    g["lr"] = cosine_schedule(step, lr, lr / 100, total_steps, warmup, start_warmup_value=lr / 100)
                ids = tokenizer.pack([_drop_words(word_ids[i], word_dropout, rng) for i in idx],
                                     tokenizer.context_length).to(dev)
                img = model.vision_head.forward_pooled(features.pooled(idx, head))
                loss = clip_loss(img, model.text_encoder(ids), model.logit_scale, groups[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
                losses.append(loss.item())
                step += 1
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            record: dict[str, Any] = {"step": step, "epoch": epoch + 1, "loss": float(np.mean(losses)),
                                      "lr": optimizer.param_groups[0]["lr"], "logit_scale": model.scale}
            if eval_classes is not None:
                record["zeroshot_acc"] = _cached_zeroshot(model, features, eval_classes)
            if metrics is not None:
                metrics.write(record)
                save_checkpoint(run_dir, {
                    "iteration": step, "epoch": epoch + 1, "vision_head": model.vision_head.state_dict(),
                    "text_encoder": model.text_encoder.state_dict(), "logit_scale": model.logit_scale.detach(),
                    "optimizer": optimizer.state_dict(), "vocab": tokenizer.vocab,
                    "context_length": tokenizer.context_length,
                    "backbone_fingerprint": fingerprint, "hyper": hyper})
            logger.info("align epoch %d/%d: %s", epoch + 1, epochs, record)
            model.history.append(record)
    finally:
        if metrics is not None:
            metrics.close()
    model.eval()
    if state_fingerprint(backbone) != fingerprint:  # a bug, never a user error: the backbone must not move
        raise RuntimeError("the frozen backbone changed during alignment")
    if run_dir is not None:
        if skipped:
            atomic_save_text(run_dir / SKIPPED_LOG, "".join(f"{w}\t{r}\n" for w, r in skipped))
        save_aligned(model, run_dir, backbone_path=backbone_path, copy_backbone=copy_backbone,
                     metadata={"training": hyper})
    model.skipped = skipped
    return model


# ------------------------------------------------------------------------------------------------


class _FeatureSource:
    """The frozen backbone's outputs for the pairs' images, computed once (or per batch when too big).

    ``kept`` lists the readable images (indices into the pairs); training indices ``idx`` refer to
    positions in ``kept``.
    """

    def __init__(self, backbone: nn.Module, pairs: Pairs, *, image_size: int, needs_tokens: bool,
                 device: torch.device, precision: str, num_workers: int, progress: bool, max_bad_fraction: float,
                 cache_limit_bytes: int) -> None:
        self.backbone, self.dataset, self.image_size = backbone, pairs.dataset, image_size
        self.device, self.precision = device, precision
        self.needs_tokens = needs_tokens
        n = len(self.dataset)
        grid = (image_size // backbone.patch_size) ** 2
        token_bytes = n * (1 + backbone.num_register_tokens + grid) * backbone.embed_dim * 4
        self.cached = not needs_tokens or token_bytes <= cache_limit_bytes
        self.kept, self.bad, parts = self._scan(num_workers, progress, max_bad_fraction)
        self.store = {k: torch.cat(v).to(device) for k, v in parts.items()} if self.cached else {}
        labels = getattr(self.dataset, "labels", None)
        classes = getattr(self.dataset, "classes", None)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels)[self.kept])
        self.classes = list(classes) if classes is not None and labels is not None else None

    def _tokens(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        from ..device import autocast

        from ..eval.microbatch import in_micro_batches, micro_batch_size_for

        with torch.inference_mode(), autocast(self.device, self.precision):
            out = in_micro_batches(self.backbone.forward_features, x, micro_batch_size_for(self.backbone, x))
        return {k: out[k].float() for k in _TOKEN_KEYS}

    def _scan(self, num_workers: int, progress: bool, max_bad_fraction: float):
        from tqdm.auto import tqdm

        from ..data import BadFileLog, make_loader
        from ..eval.viz import normalize

        loader = make_loader(self.dataset, 64, num_workers=num_workers, resize_mode="eval", load_size=self.image_size)
        bad_log = BadFileLog(max_bad_fraction, config_key="max_bad_fraction")
        kept, parts, seen = [], {}, 0
        for batch in tqdm(loader, desc="backbone features", unit="batch", disable=None if progress else True):
            bad_log.add(batch["bad"])
            seen += len(batch["indices"]) + len(batch["bad"])
            bad_log.check(seen, total=len(self.dataset))
            if not len(batch["indices"]):
                continue
            kept += batch["indices"].tolist()
            if not self.cached:
                continue
            t = self._tokens(normalize(batch["images"].to(self.device)))
            new = t if self.needs_tokens else {"pooled": pooled_features(t["cls"], t["patches"])}
            for k, v in new.items():
                parts.setdefault(k, []).append(v.cpu())
        return kept, bad_log.items, parts

    def pooled(self, idx: list[int], head: VisionHead) -> torch.Tensor:
        """``(len(idx), 2D)`` pooled features of kept images ``idx`` (through the head's blocks if any)."""
        if not self.needs_tokens:
            return self.store["pooled"][idx]
        if self.cached:
            t = {k: self.store[k][idx] for k in _TOKEN_KEYS}
        else:
            from ..data import resize_eval
            from ..eval.viz import normalize

            x = torch.stack([resize_eval(self.dataset.load(self.kept[i]), self.image_size) for i in idx])
            t = self._tokens(normalize(x.to(self.device)))
        return head.pool(t["cls"], t["registers"], t["patches"])


def _cached_zeroshot(model: AlignedModel, features: _FeatureSource, classes: list[str]) -> float:
    """Zero-shot accuracy on the training images' own classes, from the cached features."""
    from .zeroshot import class_embeddings

    model.eval()
    with torch.no_grad():
        text = class_embeddings(model, classes)
        correct = 0
        for start in range(0, len(features.kept), 256):
            idx = list(range(start, min(start + 256, len(features.kept))))
            img = model.vision_head.forward_pooled(features.pooled(idx, model.vision_head))
            correct += int(((img @ text.T).argmax(1).cpu() == features.labels[idx]).sum())
    model.train()
    return correct / len(features.kept)


def _drop_words(ids: list[int], p: float, rng: random.Random) -> list[int]:
    if p <= 0 or len(ids) <= 1:
        return ids
    kept = [i for i in ids if rng.random() >= p]
    return kept or [ids[rng.randrange(len(ids))]]


def _param_groups(model: AlignedModel, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on biases, norms, embeddings' positions or the logit scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "pos_embed" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _heads_for(backbone: nn.Module) -> int:
    heads = getattr(backbone, "num_heads", 4)
    return heads if backbone.embed_dim % heads == 0 else 1


def _check_run_dir(run_dir: Path, *, force: bool, resume: bool) -> None:
    if resume:
        if force:
            raise ConfigError("--resume continues the run in the output folder and --force replaces it; pass one")
        return
    for name in (CONFIG_FILE, "checkpoint.pt"):
        if (run_dir / name).exists() and not force:
            check_writable(run_dir / name, force=False)  # raises, naming the file and --force
    if force:
        for name in ("checkpoint.pt", "checkpoint.prev.pt", "metrics.jsonl", SKIPPED_LOG):
            try:
                (run_dir / name).unlink()
            except FileNotFoundError:
                pass


def _check_args(**values: Any) -> None:
    for name in ("epochs", "batch_size", "embed_dim", "image_size"):
        if values[name] < 1:
            raise ConfigError(f"{name}={values[name]} must be at least 1")
    if values["batch_size"] < 2:
        raise ConfigError(f"batch_size={values['batch_size']}: contrastive training needs at least 2 pairs per batch")
    if not values["lr"] > 0:
        raise ConfigError(f"lr={values['lr']} must be positive")
    if not 0 <= values["word_dropout"] < 1:
        raise ConfigError(f"word_dropout={values['word_dropout']} must be in [0, 1)")
    if values["head_blocks"] < 0:
        raise ConfigError(f"head_blocks={values['head_blocks']} must be 0 or more")
