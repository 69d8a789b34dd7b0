import torch
import torch.nn.functional as F

from dinolab.models import DINOHead


def test_head_layout_matches_official_keys():
    head = DINOHead(16, 10, hidden_dim=12, bottleneck_dim=6)
    assert set(head.state_dict()) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight",
                                      "mlp.4.bias", "last_layer.weight_g", "last_layer.weight_v"}
    bn = DINOHead(16, 10, hidden_dim=12, bottleneck_dim=6, use_bn=True)
    assert "mlp.1.running_mean" in bn.state_dict() and "mlp.6.weight" in bn.state_dict()


def test_normalised_last_layer_gives_cosine_logits():
    torch.manual_seed(0)
    head = DINOHead(16, 10, hidden_dim=12, bottleneck_dim=6, norm_last_layer=True)
    assert not head.last_layer.weight_g.requires_grad
    x = torch.randn(4, 16)
    z = head.mlp(x)
    expected = F.normalize(z, dim=-1) @ F.normalize(head.last_layer.weight_v, dim=-1).T
    torch.testing.assert_close(head(x), expected)
    assert head(x).abs().max() <= 1.0 + 1e-6


def test_trainable_gain_and_plain_prototypes():
    head = DINOHead(16, 10, hidden_dim=12, bottleneck_dim=6, norm_last_layer=False)
    assert head.last_layer.weight_g.requires_grad
    plain = DINOHead(16, 10, hidden_dim=12, bottleneck_dim=6, weight_norm=False)
    assert set(k for k in plain.state_dict() if k.startswith("last_layer")) == {"last_layer.weight"}
    one = DINOHead(16, 10, bottleneck_dim=6, nlayers=1)
    assert one(torch.randn(3, 16)).shape == (3, 10)
