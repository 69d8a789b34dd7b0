import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinolab.eval.objects import (
    box_baselines,
    centered_box,
    evaluate_object_discovery,
    evaluate_objects,
    gt_mask,
    jaccard,
    mask_from_attention,
    mask_from_pca,
    mask_from_similarity,
)
from dinolab.models import VisionTransformer


def test_jaccard_on_hand_made_masks():
    pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
    gt = np.array([[1, 0, 0], [0, 1, 1]], bool)
    assert jaccard(pred, gt) == pytest.approx(2 / 4)  # intersection {(0,0),(1,1)}, union 4 pixels
    assert jaccard(pred, pred) == 1.0
    assert jaccard(pred, ~pred) == 0.0
    assert jaccard(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    with pytest.raises(ValueError):
        jaccard(pred, gt[:, :2])


def test_centered_box():
    box = centered_box(10, 20, area=0.36)  # sides scaled by 0.6: 6×12, offsets 2 and 4
    expected = torch.zeros(10, 20, dtype=torch.bool)
    expected[2:8, 4:16] = True
    assert torch.equal(box, expected)


def test_box_baselines_pick_the_best_area():
    gt = torch.zeros(20, 20, dtype=torch.bool)
    gt[5:15, 5:15] = True  # a centred square of 25% area: the 25% box matches it exactly
    base = box_baselines([gt])
    assert base["best_box_area"] == pytest.approx(0.25)
    assert base["best_box_jaccard"] == pytest.approx(1.0)
    assert base["box_jaccard"] == pytest.approx(jaccard(centered_box(20, 20, 0.5), gt))


def test_gt_mask_accepts_label_maps_and_stacks():
    assert torch.equal(gt_mask(np.array([[0, 2], [0, 0]])), torch.tensor([[False, True], [False, False]]))
    stack = np.zeros((2, 2, 2), bool)
    stack[0, 0, 0] = stack[1, 1, 1] = True
    assert gt_mask(stack).sum() == 2


def test_mask_from_attention_heads_modes():
    attn = torch.full((3, 4, 4), 0.01)
    attn[0, 1, 1] = attn[1, 1, 1] = 1.0  # two heads agree on (1,1)
    attn[2, 3, 3] = 1.0                  # one head looks elsewhere
    vote = mask_from_attention(attn, 0.6, heads="vote")
    union = mask_from_attention(attn, 0.6, heads="union")
    assert vote.sum() == 1 and vote[1, 1]
    assert union.sum() == 2 and union[1, 1] and union[3, 3]
    mean = mask_from_attention(attn, 0.6, heads="mean")
    # mean map: (1,1) = 2.01/3 = 0.67, (3,3) = 1.02/3 = 0.34, 14 others 0.01: total 1.15;
    # (1,1) alone holds 0.67/1.15 = 58% < 60%, so (3,3) joins
    assert mean.sum() == 2 and mean[1, 1] and mean[3, 3]
    with pytest.raises(ValueError):
        mask_from_attention(attn, heads="max")


def clusters(h, w, obj, noise=0.1, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.zeros(d), torch.zeros(d)
    a[0], b[1] = 2.0, 2.0
    return torch.where(obj[..., None], a, b) + noise * torch.randn(h, w, d, generator=g)


def test_mask_from_pca_and_similarity_find_an_off_centre_object():
    obj = torch.zeros(10, 12, dtype=torch.bool)
    obj[1:5, 6:10] = True  # top right, away from the centre
    f = clusters(10, 12, obj)
    assert torch.equal(mask_from_pca(f), obj)
    assert torch.equal(mask_from_similarity(f), obj)


def test_similarity_keeps_the_component_of_the_seed_only():
    obj = torch.zeros(10, 10, dtype=torch.bool)
    obj[1:4, 1:4] = True
    obj[6:8, 6:8] = True  # a second, separate blob of the same kind
    m = mask_from_similarity(clusters(10, 10, obj, seed=1))
    first, second = obj.clone(), obj.clone()
    first[6:8, 6:8] = False
    second[1:4, 1:4] = False
    assert torch.equal(m, first) or torch.equal(m, second)


# ---- a synthetic end-to-end case with a known answer ------------------------------------------------
class RednessModel(torch.nn.Module):
    """A stand-in ViT whose last-layer [CLS] attention on a patch is proportional to its share of red
    pixels and whose patch features are the patch's mean colour; CLS and two registers take 20%."""

    patch_size, num_register_tokens, num_heads = 8, 2, 2

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def _patch_colours(self, x):
        return F.avg_pool2d(x, self.patch_size).flatten(2).transpose(1, 2)  # B×N×3

    def forward_features(self, x):
        return {"patches": self._patch_colours(x)}

    def get_last_selfattention(self, x):
        red = (x[:, 0] - 0.5 * (x[:, 1] + x[:, 2]) > 1.5).float()[:, None]  # red pixels (normalised input)
        share = F.avg_pool2d(red, self.patch_size).flatten(1)  # B×N share of red pixels per patch
        patches = 0.8 * (share + 1e-3) / (share + 1e-3).sum(1, keepdim=True)
        row = torch.cat([torch.full((x.shape[0], 3), 0.2 / 3), patches], dim=1)  # CLS, 2 registers, patches
        t = row.shape[1]
        attn = torch.full((x.shape[0], self.num_heads, t, t), 1.0 / t)
        attn[:, :, 0] = row[:, None]
        return attn


class RedObjects:
    """Grey noisy images with one red square placed away from the centre, and their masks."""

    def __init__(self, n=6, size=64):
        g = np.random.default_rng(0)
        self.images, self.gts = [], []
        for i in range(n):
            img = g.integers(90, 160, size=(size, size, 3)).astype(np.uint8)
            s = int(g.integers(14, 22))
            top = int(g.choice([2, size - s - 2]))
            left = int(g.choice([2, size - s - 2]))
            gt = np.zeros((size, size), bool)
            gt[top: top + s, left: left + s] = True
            img[gt] = (220, 30, 30)
            self.images.append(torch.from_numpy(img).permute(2, 0, 1).contiguous())
            self.gts.append(gt)

    def __len__(self):
        return len(self.images)

    def load(self, i):
        return self.images[i]

    def masks(self, i):
        return self.gts[i]


@pytest.mark.parametrize("method", ["attention", "pca", "similarity"])
def test_object_discovery_beats_centred_boxes_when_the_answer_is_known(method):
    result = evaluate_object_discovery(RednessModel(), RedObjects(), method, image_size=64, progress=False)
    assert result.n == 6 and len(result.per_image) == 6
    # masks follow the 8-pixel patch grid, so an object is found up to its boundary patches (and the
    # 60% attention mass leaves out the patches the object only grazes)
    assert result.jaccard > 0.5
    assert result.jaccard > result.best_box_jaccard + 0.3
    assert result.box_jaccard <= result.best_box_jaccard


def test_object_discovery_runs_on_a_real_vit_with_registers():
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                              num_register_tokens=4).eval()
    data = RedObjects(n=2, size=40)
    for method in ("attention", "pca", "similarity"):
        r = evaluate_object_discovery(model, data, method, image_size=40, progress=False)
        assert 0.0 <= r.jaccard <= 1.0 and r.n == 2


def test_evaluate_objects_runs_every_method_and_calls_back_per_image():
    data = RedObjects(n=3, size=64)
    seen = []
    res = evaluate_objects(RednessModel(), data, ("attention", "pca"), image_size=64, device="cpu", precision="fp32",
                           progress=False, on_image=lambda i, image, masks, gt: seen.append((i, sorted(masks))))
    assert seen == [(0, ["attention", "pca"]), (1, ["attention", "pca"]), (2, ["attention", "pca"])]
    assert res.n == res.n_scored == 3 and set(res.jaccard) == {"attention", "pca"}
    single = evaluate_object_discovery(RednessModel(), data, "pca", image_size=64, progress=False)
    assert res.jaccard["pca"] == single.jaccard and res.baselines["box_jaccard"] == single.box_jaccard


def test_evaluate_objects_without_ground_truth_scores_nothing():
    class Unmasked(RedObjects):
        def masks(self, i):
            return None

    res = evaluate_objects(RednessModel(), Unmasked(n=2, size=64), ("attention",), image_size=64, device="cpu",
                           progress=False)
    assert res.n == 2 and res.n_scored == 0 and res.jaccard == {} and res.baselines == {}
