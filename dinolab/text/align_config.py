"""The settings of ``dinolab align`` / :func:`dinolab.text.align`: one dataclass, one place for every default.

Loaded like ``dinolab train``'s config (:mod:`dinolab.runtime.config_loader`): defaults, then a YAML
file (``--config F.yaml``), then the command's flags and ``key=value`` overrides; a run saves its
resolved settings as ``config.yaml`` in its folder, and ``--resume`` starts from them.

Examples:
    >>> cfg = ALIGN_SCHEMA.load(None, ["epochs=3", "lr=1e-2"])
    >>> cfg.epochs, cfg.lr, cfg.batch_size
    (3, 0.01, 64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..runtime.config_loader import ConfigSchema, bounded, device_name

CONFIG_NAME = "config.yaml"


@dataclass
class AlignConfig:
    """Alignment of a text encoder to a frozen backbone (see :func:`dinolab.text.align`)."""

    weights: str | None = bounded(None, help="backbone weights, any file dinolab.load_model reads (kept frozen)")
    pairs: str | None = bounded(None, help="CSV with columns image,caption, or builtin:shapes[?n=..&size=..]")
    epochs: int = bounded(30, ge=1, help="passes over the pairs")
    batch_size: int = bounded(64, ge=2, help="pairs per step (contrastive: at least 2)")
    lr: float = bounded(1e-3, gt=0, help="peak AdamW learning rate (linear warm-up, cosine to lr/100)")
    weight_decay: float = bounded(1e-4, ge=0, help="AdamW weight decay (matrices only)")
    warmup_epochs: float = bounded(1.0, ge=0, help="epochs of linear learning-rate warm-up")
    embed_dim: int = bounded(256, ge=1, help="joint embedding size")
    head_blocks: int = bounded(0, ge=0, help="transformer blocks in the vision head (0: an MLP on pooled features, "
                                            "fastest; dino.txt uses 2)")
    head_hidden_dim: int = bounded(1024, ge=1, help="hidden width of the vision head's MLP")
    text_width: int = bounded(128, ge=1, help="text transformer width")
    text_depth: int = bounded(2, ge=1, help="text transformer blocks")
    text_heads: int = bounded(4, ge=1, help="text transformer attention heads")
    causal: bool = bounded(True, help="plain attention in the text encoder instead of causal")
    word_dropout: float = bounded(0.3, ge=0, lt=1, help="probability of leaving a caption word out in training")
    image_size: int | None = bounded(None, ge=1, help="side of the image fed to the backbone (null: the size the "
                                                      "backbone records, 224 for official weights)")
    mean: tuple[float, float, float] | None = bounded(None, help="normalisation mean of the RGB channels in [0, 1] "
                                                                "(null: the backbone's)")
    std: tuple[float, float, float] | None = bounded(None, gt=0, help="normalisation std of the RGB channels "
                                                                     "(null: the backbone's)")
    device: str = bounded("auto", check=device_name, help="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = bounded("auto", help="backbone pass precision")
    num_workers: int | None = bounded(None, ge=0, help="decoding processes (null: 0 for builtin: pairs, else 2)")
    seed: int = bounded(0, ge=0, le=2**32 - 1, help="seed of the heads' initialisation, data order, word dropout")
    copy_backbone: bool = bounded(True, help="store only a reference to WEIGHTS in OUT instead of a copy")
    progress: bool = bounded(True, help="no progress bars")
    max_bad_fraction: float = bounded(0.1, ge=0, le=1, help="stop if more than this share of the images cannot "
                                                            "be read")
    cache_limit_bytes: int = bounded(2 << 30, ge=0, help="largest token cache for a head with blocks")

    def workers(self) -> int:
        """Decoding processes: ``num_workers``, else 0 for ``builtin:`` data (in memory), else 2."""
        return self.num_workers if self.num_workers is not None else 0 if str(self.pairs).startswith("builtin:") else 2

    def inference_options(self):
        """These settings as the :class:`~dinolab.eval.options.InferenceOptions` every command runs a model with."""
        from ..eval.options import InferenceOptions

        return InferenceOptions.from_settings(self, self.workers())


ALIGN_SCHEMA = ConfigSchema(AlignConfig, command="dinolab align")
