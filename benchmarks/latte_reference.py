"""The diffusers Latte both speed benchmarks compare against, saved once so both sides load the same weights.

``training_speed.py`` and ``sampling_speed.py`` build diffusers' ``LatteTransformer3DModel``
in the configuration of the shared reference script (``../shared/bench/diffusers_latte_baseline.py``:
``tiny`` or ``medium``; 8 frames of 16x16x4 latents, patch 2, adaLN-single, learned sigma,
8 text tokens x 64), with q/k/v biases as Latte-1 has them (the layout our converter
maps), every tensor random, saved to a folder that ``kv.convert.from_diffusers`` and
``LatteTransformer3DModel.from_pretrained`` then both read. Also here: the FLOPs of one
forward (PyTorch's ``FlopCounterMode`` on the reference: the same model on every side)
and the machine's dense-matmul rate, the ceiling the achieved GFLOP/s are set against.
"""

import importlib.util
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "bench", "diffusers_latte_baseline.py")
FRAMES, SIZE, CHANNELS, TEXT_TOKENS, TEXT_DIM = 8, 16, 4, 8, 64


def reference_module():
    """The shared reference script as a module (its ``CONFIGS``: the diffusers configurations)."""
    if not os.path.exists(REFERENCE):
        raise SystemExit(f"The reference script is missing: {REFERENCE}")
    spec = importlib.util.spec_from_file_location("diffusers_latte_baseline", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_reference_model(config, folder):
    """The diffusers Latte of ``config`` with every tensor random (seed 0), saved to ``folder``; its parameter count."""
    import torch

    from diffusers import LatteTransformer3DModel

    torch.manual_seed(0)
    model = LatteTransformer3DModel(
        in_channels=CHANNELS, out_channels=2 * CHANNELS, sample_size=SIZE, patch_size=2, video_length=FRAMES,
        caption_channels=TEXT_DIM, norm_type="ada_norm_single", activation_fn="gelu-approximate",
        norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True, **reference_module().CONFIGS[config])
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.02)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def forward_flops(model, rows):
    """FLOPs of one forward of the diffusers ``model`` on ``rows`` videos (``FlopCounterMode``: dots and attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    latents = torch.zeros(rows, CHANNELS, FRAMES, SIZE, SIZE)
    text = torch.zeros(rows, TEXT_TOKENS, TEXT_DIM)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(latents, encoder_hidden_states=text, timestep=torch.zeros(rows, dtype=torch.long),
              enable_temporal_attentions=True, return_dict=False)
    return int(counter.get_total_flops())


def matmul_gflops(threads, size=1024, repeats=5):
    """This machine's dense float32 matmul rate with ``threads`` threads (PyTorch, best of ``repeats``), GFLOP/s."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * size ** 3 / best / 1e9
