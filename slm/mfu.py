"""Model FLOPs utilization: achieved training FLOP/s over the devices' dense peak.

FLOPs per token follow the PaLM appendix (and nanoGPT): 6·N for the matmuls forward and backward,
plus 12·L·d·T for attention scores, with N every parameter, L layers, d width, T sequence length.
"""

from __future__ import annotations

# Dense peak TFLOP/s per device: (bf16/fp16 tensor cores, plain fp32). Vendor datasheets, no sparsity;
# GeForce cards at their FP16-with-FP32-accumulate rate (half their FP16-accumulate figure), which is
# what bf16 training runs at. RTX 5090: 838.4 sparse FP16 → 419.2 dense → 209.5 with FP32 accumulate.
# B200: 2.25 PFLOP/s dense BF16, 75 TFLOP/s FP32 (HGX B200: 600 for eight).
PEAK_TFLOPS = {
    "B200": (2250.0, 75.0),
    "RTX 5090": (209.5, 104.8),
    "H200": (989.4, 66.9),
    "H100 PCIe": (756.0, 51.2),
    "H100": (989.4, 66.9),
    "A100": (312.0, 19.5),
    "L40S": (362.1, 91.6),
    "L4": (121.0, 30.3),
    "A10G": (70.0, 31.2),
    "A10": (125.0, 31.2),
    "RTX 4090": (165.2, 82.6),
    "RTX 3090": (71.0, 35.6),
    "V100": (125.0, 15.7),
}


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Look a GPU up by its CUDA name (longest match first); None when unknown (and on CPU)."""
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in device_name:
            low, full = PEAK_TFLOPS[key]
            return low if precision in ("bf16", "fp16") else full
    return None


def flops_per_token(parameters: int, layers: int, width: int, seq_len: int) -> float:
    return 6.0 * parameters + 12.0 * layers * width * seq_len


def model_dims(config) -> tuple[int, int]:
    layers = next(getattr(config, n) for n in ("num_hidden_layers", "n_layer") if hasattr(config, n))
    width = next(getattr(config, n) for n in ("hidden_size", "n_embd") if hasattr(config, n))
    return layers, width


def mfu(tokens_per_s: float, per_token_flops: float, peak_tflops_total: float | None) -> float | None:
    if not peak_tflops_total:
        return None
    return tokens_per_s * per_token_flops / (peak_tflops_total * 1e12)
