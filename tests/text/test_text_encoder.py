import pytest
import torch

from dinolab.text.text_encoder import TextEncoder


def make(causal: bool) -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(vocab_size=12, out_dim=8, context_length=8, width=16, depth=2, num_heads=2,
                       causal=causal).eval()


@pytest.mark.parametrize("causal", [True, False])
def test_padding_and_tokens_after_eos_do_not_matter(causal):
    enc = make(causal)
    a = torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0]])
    b = torch.tensor([[1, 5, 6, 2, 0, 0]])  # shorter padding
    with torch.no_grad():
        ea, eb = enc(a), enc(b)
    torch.testing.assert_close(ea, eb)
    assert ea.norm().item() == pytest.approx(1.0, abs=1e-6)
    if causal:  # nothing after the <eos> position is seen from there
        c = torch.tensor([[1, 5, 6, 2, 7, 8, 9, 4]])
        with torch.no_grad():
            torch.testing.assert_close(enc(c), ea)


@pytest.mark.parametrize("causal", [True, False])
def test_words_before_eos_matter(causal):
    enc = make(causal)
    with torch.no_grad():
        e1 = enc(torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0]]))
        e2 = enc(torch.tensor([[1, 5, 7, 2, 0, 0, 0, 0]]))
        e3 = enc(torch.tensor([[1, 6, 5, 2, 0, 0, 0, 0]]))  # same words, other order
    assert not torch.allclose(e1, e2, atol=1e-4) and not torch.allclose(e1, e3, atol=1e-4)


def test_pooling_is_at_the_first_eos():
    enc = make(True)
    ids = torch.tensor([[1, 5, 2, 0], [1, 5, 6, 2], [1, 4, 4, 4]])
    assert enc.eos_positions(ids).tolist() == [2, 3, 3]  # no <eos>: the last position
    # Pooling at position 2 of row 0 equals encoding the prefix [1, 5, 2] alone.
    with torch.no_grad():
        torch.testing.assert_close(enc(ids[:1]), enc(ids[:1, :3]))


def test_config_rebuilds_and_long_input_is_refused():
    enc = make(False)
    again = TextEncoder(**enc.config)
    assert again.load_state_dict(enc.state_dict()) is not None
    with pytest.raises(ValueError, match="context_length"):
        enc(torch.ones(1, 9, dtype=torch.long))


def test_gradients_reach_every_parameter():
    enc = make(True).train()
    enc(torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0], [1, 7, 2, 0, 0, 0, 0, 0]])).sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None]
    assert missing == []
