"""MFU arithmetic and the GPU peak lookup."""

import pytest

from slm.mfu import flops_per_token, mfu, peak_tflops


def test_peak_lookup_prefers_the_longest_name_and_follows_precision():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("NVIDIA A10G", "fp32") == 31.2
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5
    assert peak_tflops("cpu", "fp32") is None
    # Blackwell, as torch.cuda.get_device_name names it: the FF_3.13 line's GPU and the datacentre part
    assert peak_tflops("NVIDIA GeForce RTX 5090", "bf16") == 209.5
    assert peak_tflops("NVIDIA B200", "bf16") == 2250.0


def test_mfu_is_achieved_over_peak_flops():
    per_token = flops_per_token(parameters=1_000_000, layers=4, width=128, seq_len=256)
    assert per_token == 6e6 + 12 * 4 * 128 * 256
    assert mfu(1000.0, per_token, peak_tflops_total=None) is None  # unknown peak: no number, not a guess
    assert mfu(1e6, 1e6, peak_tflops_total=2.0) == pytest.approx(0.5)
