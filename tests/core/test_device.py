import pytest
import torch

from dinolab import device as dev
from dinolab.errors import ConfigError


def test_auto_precision_follows_cpu_bf16_support(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    assert dev.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.resolve_precision("auto", cpu) == "fp32"
    assert dev.resolve_precision("bf16", cpu) == "bf16"


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    real_path = dev.Path
    monkeypatch.setattr(dev, "Path", lambda p: real_path(fake) if p == "/proc/cpuinfo" else real_path(p))
    dev.cpu_has_native_bf16.cache_clear()
    try:
        assert dev.cpu_has_native_bf16()
        fake.write_text("processor : 0\nflags : fpu avx2\n")
        dev.cpu_has_native_bf16.cache_clear()
        assert not dev.cpu_has_native_bf16()
    finally:
        dev.cpu_has_native_bf16.cache_clear()


def test_bad_choices_name_the_value_and_fix():
    with pytest.raises(ConfigError, match="fp16 is not supported on CPU"):
        dev.resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="'fp8' is not one of"):
        dev.resolve_precision("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            dev.resolve_device("cuda")
    assert dev.resolve_device("cpu") == torch.device("cpu")


def test_autocast_fp32_is_a_no_op_and_bf16_casts_matmuls():
    a = torch.randn(4, 4)
    with dev.autocast(torch.device("cpu"), "fp32"):
        assert (a @ a).dtype == torch.float32
    with dev.autocast(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16
