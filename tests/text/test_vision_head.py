import pytest
import torch

from dinolab.text.vision_head import VisionHead, pooled_features


def test_pooled_features_are_cls_then_mean_patch():
    cls = torch.tensor([[1.0, 2.0]])
    patches = torch.tensor([[[0.0, 4.0], [2.0, 0.0], [4.0, 2.0]]])
    assert pooled_features(cls, patches).tolist() == [[1.0, 2.0, 2.0, 2.0]]


@pytest.mark.parametrize("hidden_dim", [0, 32])
def test_head_without_blocks_projects_the_pooled_features(hidden_dim):
    torch.manual_seed(0)
    head = VisionHead(embed_dim=8, out_dim=6, hidden_dim=hidden_dim)
    cls, regs, patches = torch.randn(3, 8), torch.randn(3, 2, 8), torch.randn(3, 5, 8)
    out = head(cls, regs, patches)
    assert out.shape == (3, 6) and not head.needs_tokens
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    raw = head.proj(torch.cat([cls, patches.mean(1)], dim=-1))
    torch.testing.assert_close(out, raw / raw.norm(dim=-1, keepdim=True))
    # Registers are ignored without blocks.
    torch.testing.assert_close(head(cls, None, patches), out)


def test_head_with_blocks_is_permutation_invariant_over_patches_and_uses_registers():
    torch.manual_seed(0)
    head = VisionHead(embed_dim=8, out_dim=6, num_blocks=1, num_heads=2, hidden_dim=16).eval()
    assert head.needs_tokens
    cls, regs, patches = torch.randn(2, 8), torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        out = head(cls, regs, patches)
        # The blocks have no position embedding and the patches are mean-pooled: order is irrelevant.
        torch.testing.assert_close(head(cls, regs, patches[:, torch.tensor([4, 2, 0, 1, 3])]), out)
        assert not torch.allclose(head(cls, torch.randn(2, 3, 8), patches), out, atol=1e-4)
        assert not torch.allclose(head(cls, None, patches), out, atol=1e-4)
