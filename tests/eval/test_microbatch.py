import pytest
import torch

import dinolab
from dinolab.errors import ConfigError
from dinolab.eval.features import embed
from dinolab.eval.microbatch import CPU_ACTIVATION_BUDGET, in_micro_batches, micro_batch_size, micro_batch_size_for


def test_micro_batch_size_keeps_the_residual_stream_under_the_cpu_budget():
    vits14 = dinolab.create_model("dinov2_vits14", depth=1)
    # 224 px / 14 = 16x16 patches + CLS = 257 tokens of width 384; bf16 = 2 bytes, fp32 = 4
    assert micro_batch_size(vits14, 224, "bf16", "cpu", 32) == CPU_ACTIVATION_BUDGET // (257 * 384 * 2)
    assert micro_batch_size(vits14, 224, "fp32", "cpu", 32) == CPU_ACTIVATION_BUDGET // (257 * 384 * 4)
    assert micro_batch_size(vits14, (224, 448), "fp32", "cpu", 32) == CPU_ACTIVATION_BUDGET // (513 * 384 * 4)
    assert micro_batch_size(vits14, 224, "bf16", "cpu", 3) == 3  # never more than the batch
    assert micro_batch_size(vits14, 2240, "fp32", "cpu", 32) == 1  # at least one image
    assert micro_batch_size(vits14, 224, "bf16", "cuda", 32) == 32  # GPUs keep the whole batch
    reg = dinolab.create_model("vit_small", patch_size=14, num_register_tokens=4, depth=1)
    assert micro_batch_size(reg, 224, "fp32", "cpu", 64) == CPU_ACTIVATION_BUDGET // (261 * 384 * 4)
    assert micro_batch_size(torch.nn.Linear(2, 2), 224, "fp32", "cpu", 32) == 32  # not a ViT: untouched


def test_in_micro_batches_splits_evenly_and_joins_nested_outputs():
    x = torch.arange(32.0).view(32, 1)
    sizes = []

    def fn(chunk):
        sizes.append(len(chunk))
        return [(chunk * 2, {"sum": chunk.sum(1)})]

    (doubled, parts), = in_micro_batches(fn, x, 12)
    assert sizes == [11, 11, 10]
    assert torch.equal(doubled, x * 2) and torch.equal(parts["sum"], x[:, 0])
    sizes.clear()
    in_micro_batches(fn, x, 32)
    assert sizes == [32]
    with pytest.raises(TypeError, match="str"):
        in_micro_batches(lambda c: "no", x, 4)
    # optional outputs (forward_features' masks) stay None
    joined = in_micro_batches(lambda c: {"cls": c, "masks": None}, x, 5)
    assert joined["masks"] is None and torch.equal(joined["cls"], x)


def test_micro_batch_size_for_reads_device_size_and_autocast():
    vits14 = dinolab.create_model("dinov2_vits14", depth=1)
    x = torch.zeros(32, 3, 224, 224)
    assert micro_batch_size_for(vits14, x) == micro_batch_size(vits14, 224, "fp32", "cpu", 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert micro_batch_size_for(vits14, x) == micro_batch_size(vits14, 224, "bf16", "cpu", 32)
    assert micro_batch_size_for(vits14, x.bfloat16()) == micro_batch_size(vits14, 224, "bf16", "cpu", 32)
    wide = torch.zeros(32, 3, 224, 448)
    assert micro_batch_size_for(vits14, wide) == micro_batch_size(vits14, (224, 448), "fp32", "cpu", 32)


def test_embed_gives_the_same_features_in_any_micro_batch_size():
    torch.manual_seed(0)
    model = dinolab.create_model("vit_tiny", patch_size=16, img_size=32, depth=2)
    data = "builtin:shapes?n=10&size=32"
    whole = embed(model, data, image_size=32, batch_size=10, precision="fp32", patch_mean=True,
                  micro_batch=10, progress=False)
    split = embed(model, data, image_size=32, batch_size=10, precision="fp32", patch_mean=True,
                  micro_batch=3, progress=False)
    assert split.paths == whole.paths
    assert torch.allclose(torch.from_numpy(split.cls), torch.from_numpy(whole.cls), atol=1e-5)
    assert torch.allclose(torch.from_numpy(split.patch_mean), torch.from_numpy(whole.patch_mean), atol=1e-5)
    with pytest.raises(ConfigError, match="micro_batch=0"):
        embed(model, data, image_size=32, micro_batch=0, progress=False)
