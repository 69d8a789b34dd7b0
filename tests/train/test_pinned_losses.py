"""A regression pin for the layering of dinolab/train/: a tiny fixed-seed DINOv2-style run (DINO + iBOT +
KoLeo, Sinkhorn-Knopp targets, LayerScale, layer-wise lr decay; 6 CPU fp32 steps) must keep its per-step losses.

The expected numbers were recorded from the pre-refactor code at commit 675c469 (the flat train/ package,
before objectives/, teacher/, step.py and callbacks.py existed) with
``/work/wt/layers_baseline/pinned.py``; they are not derived from the code under test, so a change of the
order of random draws, of a term's inputs or of the step would show here. The tolerance allows for another
CPU's float summation order, not for a different computation.
"""

from __future__ import annotations

import pytest

from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.trainer import Trainer

V2 = ["data.source=builtin:shapes?n=40&size=32", "crops.global_crops_size=32", "crops.local_crops_size=16",
      "ibot.loss_weight=1.0", "ibot.mask_ratio_min_max=[0.25, 0.5]", "koleo.loss_weight=0.1",
      "dino.centering=sinkhorn_knopp", "ibot.centering=sinkhorn_knopp", "model.options={layerscale_init: 0.1}",
      "optim.layerwise_decay=0.9", "optim.patch_embed_lr_mult=0.2", "optim.lr=0.002",
      # the embedded default's crops when the numbers were recorded (issue 17 changed the default's)
      "crops.global_crops_scale=[0.4, 1.0]", "crops.local_crops_scale=[0.1, 0.4]",
      "crops.options={hflip_p: 0.0, interpolation: bilinear}"]

# step: (loss, dino_loss, ibot_loss, koleo_loss), recorded at 675c469
EXPECTED = {
    1: (10.336270332336426, 6.316625118255615, 3.359074592590332, 6.605710029602051),
    2: (9.902721405029297, 6.284912109375, 2.9716880321502686, 6.461211204528809),
    3: (9.790081977844238, 6.069055080413818, 3.052661895751953, 6.683642864227295),
    4: (9.754315376281738, 5.841563701629639, 3.2603206634521484, 6.524304389953613),
    5: (9.363921165466309, 5.735104084014893, 2.9882779121398926, 6.405393600463867),
    6: (9.353431701660156, 5.675415515899658, 2.967601776123047, 7.104145050048828),
}


def test_a_fixed_seed_dinov2_style_run_keeps_its_losses(tiny, tmp_path):
    result = Trainer(tiny(*V2), tmp_path / "run").fit()
    rows = {r["step"]: r for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss" in r}
    assert sorted(rows) == sorted(EXPECTED)
    for step, (loss, dino, ibot, koleo) in EXPECTED.items():
        r = rows[step]
        got = (r["loss"], r["dino_loss"], r["ibot_loss"], r["koleo_loss"])
        assert got == pytest.approx((loss, dino, ibot, koleo), rel=1e-4), step
        assert r["loss"] == pytest.approx(r["dino_loss"] + r["ibot_loss"] + 0.1 * r["koleo_loss"], rel=1e-5)
