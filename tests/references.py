"""Reference definitions shared by the tests and the benchmarks under bench/ (which import this module).

Both compare our code with an independent reference: the official trajectory blur kernel (as the official
`process_traj` builds it) and diffusers' `CogVideoXTransformer3DModel` configured like one of our `ToraConfig`s.
"""

from __future__ import annotations

import numpy as np

from tora_model.config import ToraConfig


def official_blur_kernel() -> np.ndarray:
    """The official blur kernel: 99×99 bivariate Gaussian σ=10, normalised to sum 1, then divided by its centre."""
    offsets = np.arange(-49, 50, dtype=np.float64)
    xx, yy = np.meshgrid(offsets, offsets)
    kernel = np.exp(-0.5 * (xx**2 + yy**2) / 100.0)
    kernel = kernel / kernel.sum()
    return kernel / kernel[49, 49]


def cogvideox_transformer_kwargs(cfg: ToraConfig) -> dict:
    """Constructor arguments of diffusers' CogVideoXTransformer3DModel for the CogVideoX part of `cfg` (RoPE on)."""
    return dict(
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        time_embed_dim=cfg.time_embed_dim,
        text_embed_dim=cfg.text_dim,
        num_layers=cfg.num_layers,
        sample_width=cfg.sample_width,
        sample_height=cfg.sample_height,
        sample_frames=cfg.sample_frames,
        patch_size=cfg.patch_size,
        max_text_seq_length=cfg.max_text_len,
        norm_eps=cfg.norm_eps,
        use_rotary_positional_embeddings=True,
    )
