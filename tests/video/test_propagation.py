"""Label propagation against a direct loop implementation of DINO v1's formula on tiny inputs."""

import math

import numpy as np
import pytest
import torch

from dinolab.eval.propagation import (
    LabelPropagation,
    PropagationSettings,
    first_frame_labels,
    hard_mask,
    neighbourhood,
    propagate_step,
)


def _loop_step(target, sources, labels, grid, radius, topk, temperature):
    """For each target patch: exp(cos / T) to every context patch within radius (rows and columns), keep
    the top-k values (and ties with the k-th), normalise, weighted sum of the source labels."""
    h, w = grid
    m, n, _ = sources.shape
    c = labels.shape[1]
    out = np.zeros((c, n))
    for t in range(n):
        ti, tj = divmod(t, w)
        vals = []
        for k in range(m):
            for s in range(n):
                si, sj = divmod(s, w)
                ok = radius <= 0 or (abs(si - ti) <= radius and abs(sj - tj) <= radius)
                a, b = target[t], sources[k, s]
                cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
                vals.append((math.exp(cos / temperature) if ok else 0.0, k, s))
        kth = sorted(v for v, _, _ in vals)[-topk]
        kept = [(v, k, s) for v, k, s in vals if v >= kth]
        total = sum(v for v, _, _ in kept)
        for v, k, s in kept:
            out[:, t] += v / total * labels[k, :, s]
    return out


@pytest.mark.parametrize("radius,topk", [(1, 5), (0, 3), (2, 1)])
def test_propagate_step_matches_the_loop(radius, topk):
    rng = np.random.default_rng(0)
    h, w, d, m, c = 3, 4, 6, 3, 3
    target = rng.normal(size=(h * w, d))
    sources = rng.normal(size=(m, h * w, d))
    labels = rng.random((m, c, h * w))
    allowed = neighbourhood(h, w, radius) if radius > 0 else None
    got = propagate_step(torch.tensor(target), torch.tensor(sources), torch.tensor(labels), allowed, topk, 0.1)
    want = _loop_step(target, sources, labels, (h, w), radius, topk, 0.1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)
    chunked = propagate_step(torch.tensor(target), torch.tensor(sources), torch.tensor(labels), allowed, topk, 0.1,
                             chunk=5)  # 12 targets in chunks of 5, 5, 2
    np.testing.assert_allclose(chunked.numpy(), want, rtol=1e-4, atol=1e-6)


def test_neighbourhood_is_a_square_window():
    allowed = neighbourhood(4, 5, 1)
    for s in range(20):
        for t in range(20):
            (si, sj), (ti, tj) = divmod(s, 5), divmod(t, 5)
            assert allowed[s, t] == (abs(si - ti) <= 1 and abs(sj - tj) <= 1)


def test_first_frame_labels_take_each_patch_centre():
    mask = np.zeros((4, 6), np.uint8)
    mask[1, 1] = 3  # the centre pixel of patch (0, 0) of a 2x2-pixel grid (pixel (1, 1))
    mask[2, 4] = 1  # not a centre: patch (1, 2) has its centre at (3, 5)
    mask[3, 5] = 1
    labels = first_frame_labels(mask, (2, 3), [0, 1, 3])
    assert labels.shape == (3, 2, 3)
    assert labels[2].tolist() == [[1, 0, 0], [0, 0, 0]]
    assert labels[1].tolist() == [[0, 0, 0], [0, 0, 1]]
    assert (labels.sum(0) == 1).all()


def test_hard_mask_min_max_scales_each_channel_before_the_argmax():
    soft = torch.zeros(2, 1, 2)
    soft[0] = torch.tensor([[0.6, 0.5]])  # background: high everywhere, small range
    soft[1] = torch.tensor([[0.0, 0.4]])  # object: lower values, but its maximum is at patch 1
    mask = hard_mask(soft, (1, 2), (1, 2), [0, 7])
    assert mask.tolist() == [[0, 7]]  # after scaling, background (1, 0) vs object (0, 1)
    big = hard_mask(soft, (1, 2), (2, 4), [0, 7])
    assert big.tolist() == [[0, 0, 7, 7]] * 2


def test_the_context_holds_the_first_frame_and_the_last_n():
    rng = np.random.default_rng(1)
    feats = [torch.tensor(rng.normal(size=(2, 2, 4)), dtype=torch.float32) for _ in range(12)]
    labels = torch.eye(2)[torch.tensor([[0, 1], [1, 0]])].permute(2, 0, 1)
    prop = LabelPropagation(feats[0], labels, PropagationSettings(n_last_frames=3, radius=0, topk=5))
    for f in feats[1:11]:
        prop.step(f)
    assert len(prop.queue) == 3
    assert torch.equal(prop.queue[0][0], feats[8].reshape(4, 4))  # frames 8, 9, 10
    context = [(feats[0].reshape(4, 4), labels.reshape(2, 4))] + [(f, s) for f, s in prop.queue]
    want = _loop_step(feats[11].reshape(4, 4).numpy(), np.stack([f.numpy() for f, _ in context]),
                      np.stack([s.numpy() for _, s in context]), (2, 2), 0, 5, 0.1)
    soft = prop.step(feats[11])
    np.testing.assert_allclose(soft.reshape(2, 4).numpy(), want, rtol=1e-4, atol=1e-6)
    assert torch.equal(prop.queue[-1][0], feats[11].reshape(4, 4))


def test_patches_that_match_only_themselves_copy_their_labels():
    # one-hot position features: cos = 1 with the same patch of every context frame, 0 elsewhere
    feats = torch.eye(6).reshape(2, 3, 6)
    labels = first_frame_labels(np.array([[0, 1, 2], [2, 1, 0]], np.uint8), (2, 3), [0, 1, 2])
    prop = LabelPropagation(feats, labels, PropagationSettings(topk=1))
    for _ in range(4):
        soft = prop.step(feats)
    assert torch.equal(soft.argmax(0), torch.tensor([[0, 1, 2], [2, 1, 0]]))
