"""The settings of ``dinolab finetune`` / :func:`dinolab.finetune`: one dataclass, one place for every default.

Loaded like ``dinolab align``'s (:mod:`dinolab.runtime.config_loader`): defaults, then a YAML file
(``--config F.yaml``), then flags and ``key=value`` overrides; a run saves the resolved settings as
``config.yaml`` in its folder and ``--resume`` starts from them.

Defaults meant for small labelled sets without tuning: AdamW, linear warm-up then cosine to 1% of
the peak (never a step schedule), a peak learning rate per mode (``lr: null``), random resized crop
and flip, gradient clipping at 1.0, early stopping on the validation balanced accuracy, and 30
epochs but at least 500 steps however few the images (the schedule length of BiT's HyperRule for
sets under 20k images, Kolesnikov et al. 2020: 30 epochs of 300 images are only 300 steps at batch
32); a given ``epochs`` is run exactly.

Examples:
    >>> cfg = FINETUNE_SCHEMA.load(None, ["mode=last:2", "epochs=3"])
    >>> cfg.mode, cfg.epochs, cfg.peak_lr()
    ('last:2', 3, 0.0002)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..runtime.config_loader import ConfigSchema, bounded, device_name

CONFIG_NAME = "config.yaml"
DEFAULT_EPOCHS = 30  # when epochs is null, unless min_steps needs more
# peak backbone learning rate per mode when lr is null (the head has head_lr)
DEFAULT_LR = {"head": 0.0, "last": 2e-4, "lora": 5e-4, "full": 5e-5}


def parse_mode(value: str) -> tuple[str, int]:
    """``"head"`` / ``"lora"`` / ``"full"`` / ``"last:N"`` -> ``(kind, N)`` (N = 0 unless last)."""
    text = str(value)
    if text in ("head", "lora", "full"):
        return text, 0
    kind, _, n = text.partition(":")
    if kind == "last" and n.isdigit() and int(n) >= 1:
        return "last", int(n)
    raise ValueError(f"mode={text!r} is not head, last:N (N >= 1 blocks), lora or full")


def _mode_problem(value: object) -> str | None:
    try:
        parse_mode(str(value))
    except ValueError:
        return "is not head, last:N (e.g. last:2), lora or full"
    return None


@dataclass
class FinetuneConfig:
    """Fine-tuning a classifier on a backbone (see :func:`dinolab.finetune.finetune`)."""

    weights: str | None = bounded(None, help="backbone: any file dinolab.load_model reads, or a `dinolab train` run")
    train_data: str | None = bounded(None, help="labelled images: class-per-subfolder folder, .csv/.txt of path,label, "
                                                "or builtin:NAME")
    val: str | None = bounded(None, help="labelled validation images (default: a stratified share of the training "
                                         "data, val_fraction)")
    mode: str = bounded("head", check=_mode_problem, help="head (linear head on frozen features), last:N (the last N "
                                                         "blocks too), lora (low-rank adapters) or full")
    feature: Literal["cls", "cls+patch"] = bounded("cls+patch", help="head input: CLS token, or CLS and the mean "
                                                                    "patch token")
    n_blocks: int = bounded(1, ge=1, help="CLS tokens of the last N blocks, concatenated")
    epochs: int | None = bounded(None, ge=1, help="passes over the training images (null: 30, or more to make "
                                                  "min_steps steps)")
    min_steps: int = bounded(500, ge=0, help="epochs null: at least this many steps, so small sets get more epochs "
                                             "(BiT's rule: 500 steps under 20k images)")
    batch_size: int = bounded(32, ge=1, help="images per step")
    lr: float | None = bounded(None, gt=0, help="peak learning rate of the backbone's trained parameters (null: "
                                                "last:N 2e-4, lora 5e-4, full 5e-5)")
    head_lr: float = bounded(5e-3, gt=0, help="peak learning rate of the head")
    weight_decay: float = bounded(0.05, ge=0, help="AdamW weight decay (not on biases, norms, tokens' 1-D params)")
    warmup_epochs: float = bounded(2.0, ge=0, help="epochs of linear learning-rate warm-up")
    layer_decay: float = bounded(0.65, gt=0, le=1, help="full mode: learning rate x decay^(depth+1-layer)")
    drop_path: float = bounded(0.1, ge=0, lt=1, help="full mode: stochastic depth rate of the last block")
    lora_rank: int = bounded(8, ge=1, help="lora mode: rank of each adapter")
    lora_alpha: float = bounded(16.0, gt=0, help="lora mode: scale alpha (the update is alpha/rank * B A)")
    clip_grad: float = bounded(1.0, ge=0, help="gradient norm clip (0: off)")
    crop: bool = bounded(True, help="no random resized crop in training")
    flip: bool = bounded(True, help="no random horizontal flip in training (digits, text, asymmetric classes)")
    crop_scale: float = bounded(0.5, gt=0, le=1, help="smallest share of the image area a random crop keeps (0.5: "
                                                      "small sets lose too much to 0.25 crops, BENCHMARKS.md)")
    balance: Literal["none", "sampler"] = bounded("none", help="sampler: draw images class-balanced")
    loss_weights: Literal["none", "inverse", "effective"] = bounded("none", help="class weights of the loss: inverse "
                                                                               "frequency or effective number "
                                                                               "(Cui et al. 2019)")
    beta: float = bounded(0.999, ge=0, lt=1, help="effective-number beta (0.999; 0.9999 for thousands per class)")
    logit_adjust: Literal["none", "loss", "posthoc"] = bounded("none", help="logit adjustment (Menon et al. 2021): "
                                                                          "+tau log prior in the loss, or -tau log "
                                                                          "prior after training")
    tau: float = bounded(1.0, ge=0, help="logit adjustment strength")
    label_smoothing: float = bounded(0.0, ge=0, lt=1, help="label smoothing of the cross-entropy")
    val_fraction: float = bounded(0.2, gt=0, lt=1, help="share of each class held out when no --val is given")
    select: Literal["balanced_accuracy", "accuracy", "macro_f1"] = bounded("balanced_accuracy",
                                                                           help="validation metric that picks the "
                                                                                "best epoch")
    patience: int = bounded(10, ge=0, help="stop after this many epochs without a better validation metric (0: never)")
    calibrate: bool = bounded(True, help="no temperature scaling on the validation split")
    image_size: int | None = bounded(None, ge=1, help="side of the image fed to the backbone (null: the backbone's)")
    mean: tuple[float, float, float] | None = bounded(None, help="normalisation mean (null: the backbone's)")
    std: tuple[float, float, float] | None = bounded(None, gt=0, help="normalisation std (null: the backbone's)")
    device: str = bounded("auto", check=device_name, help="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = bounded("auto", help="autocast precision")
    num_workers: int | None = bounded(None, ge=0, help="decoding processes (null: 0 for builtin: data, else 2)")
    max_bad_fraction: float = bounded(0.1, ge=0, le=1, help="stop if more than this share of the images cannot be "
                                                            "read")
    seed: int = bounded(0, ge=0, le=2**32 - 1, help="seed of the split, head initialisation, data order, crops")
    progress: bool = bounded(True, help="no progress bars")

    def epochs_for(self, steps_per_epoch: int) -> int:
        """Epochs to run: ``epochs`` when set, else 30 or the fewer epochs that make ``min_steps`` steps."""
        if self.epochs is not None:
            return self.epochs
        return max(DEFAULT_EPOCHS, -(-self.min_steps // max(steps_per_epoch, 1)))

    def kind(self) -> tuple[str, int]:
        return parse_mode(self.mode)

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.kind()[0]]

    def workers(self) -> int:
        """Decoding processes: ``num_workers``, else 0 for ``builtin:`` data (in memory), else 2."""
        return self.num_workers if self.num_workers is not None else 0 if str(self.train_data).startswith("builtin:") else 2

    def inference_options(self):
        """These settings as the :class:`~dinolab.eval.options.InferenceOptions` every command runs a model with."""
        from ..eval.options import InferenceOptions

        return InferenceOptions.from_settings(self, self.workers())


FINETUNE_SCHEMA = ConfigSchema(FinetuneConfig, command="dinolab finetune")
