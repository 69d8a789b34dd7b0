"""The traceable position-table resize equals F.interpolate's, and eager results are untouched by it."""

import pytest
import torch
import torch.nn.functional as F

from dinolab.models.layers.pos_embed import _interpolate_traceable, bicubic_matrix, interpolate_pos_embed


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("scale", [9.1 / 4, 2.0, 0.6, 5 / 7])
def test_bicubic_matrix_is_one_axis_of_interpolate(scale, antialias):
    v = torch.randn(1, 1, 7, 3)
    ref = F.interpolate(v, scale_factor=(scale, 1), mode="bicubic", antialias=antialias)[0, 0]
    w = bicubic_matrix(ref.shape[0], 7, torch.tensor(1 / scale), antialias)
    torch.testing.assert_close(w @ v[0, 0], ref, atol=2e-6, rtol=0)


def test_plain_weights_at_integer_positions_are_the_keys_kernel():
    # scale 1/2 upsampling (inv 0.5): output 1 sits at source 0.25, weights from Keys (a=-0.75) by hand
    w = bicubic_matrix(8, 4, torch.tensor(0.5))
    a, t = -0.75, 0.25
    near = lambda x: (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1  # noqa: E731
    far = lambda x: a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a  # noqa: E731
    expected = [far(1 + t) + near(t), near(1 - t), far(2 - t), 0.0]  # index -1 clamps onto 0
    torch.testing.assert_close(w[1], torch.tensor(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize("offset,antialias,mode", [(0.1, False, "official"), (0.0, True, "official"),
                                                   (0.0, False, "hf"), (0.1, True, "official")])
@pytest.mark.parametrize("hw", [(5, 5), (3, 7), (8, 5), (5, 2), (1, 1)])
def test_traceable_resize_matches_eager(offset, antialias, mode, hw):
    torch.manual_seed(0)
    pe = torch.randn(1, 1 + 25, 6)
    eager = interpolate_pos_embed(pe, hw, offset=offset, antialias=antialias, mode=mode)
    traced = _interpolate_traceable(pe, 5, *hw, offset=offset if mode == "official" else 0.0, antialias=antialias)
    torch.testing.assert_close(traced, eager, atol=2e-5, rtol=0)
    if hw == (5, 5):  # eager returns the table itself; the graph's identity weights must be exact
        assert torch.equal(traced, pe)
