"""The frozen backbone's features for :func:`dinolab.text.align`, computed once per image.

Nothing augments the images, so the backbone runs **once per image**: with a head without blocks
only the pooled ``(2D,)`` feature of each image is kept; with blocks the tokens ``(1 + R + N, D)``
are kept when they fit in ``cache_limit_bytes`` and recomputed per batch otherwise. Images are
prepared by the run's :class:`~dinolab.models.Preprocess` (the backbone's record unless overridden).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.preprocess import Preprocess
from .aligned import AlignedModel
from .pairs import Pairs
from .vision_head import VisionHead, pooled_features

_TOKEN_KEYS = ("cls", "registers", "patches")


class FeatureSource:
    """The frozen backbone's outputs for the pairs' images, computed once (or per batch when too big).

    ``kept`` lists the readable images (indices into the pairs); training indices ``idx`` refer to
    positions in ``kept``.
    """

    def __init__(self, backbone: nn.Module, pairs: Pairs, *, preprocess: Preprocess, needs_tokens: bool,
                 device: torch.device, precision: str, num_workers: int, progress: bool, max_bad_fraction: float,
                 cache_limit_bytes: int) -> None:
        self.backbone, self.dataset, self.preprocess = backbone, pairs.dataset, preprocess
        image_size = preprocess.image_size
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

        pp = self.preprocess
        loader = make_loader(self.dataset, 64, num_workers=num_workers, resize_mode="eval", load_size=pp.image_size,
                             preprocess=pp)
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
            t = self._tokens(pp.normalize(batch["images"].to(self.device)))
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
            pp = self.preprocess
            x = torch.stack([pp.resize_image(self.dataset.load(self.kept[i])) for i in idx])
            t = self._tokens(pp.normalize(x.to(self.device)))
        return head.pool(t["cls"], t["registers"], t["patches"])


def cached_zeroshot(model: AlignedModel, features: FeatureSource, classes: list[str]) -> float:
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
