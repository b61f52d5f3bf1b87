"""Input embeddings of the Tora / CogVideoX-5B transformer: patches, text, timestep, 3-D RoPE tables.

Source: `tora_spec.md` §5 (SAT `DiffusionTransformer` as released with Tora; names follow the diffusers-version
checkpoint). Layouts:

* latents `[B, T, C, H, W]` → video tokens `[B, T·(H/p)·(W/p), D]`, token order (t, h, w) row-major;
* T5 embeddings `[B, L, text_dim]` → text tokens `[B, L, D]`, placed before the video tokens;
* timestep `[B]` → sinusoid `[B, D]` (cos half first) → `[B, time_embed_dim]`;
* RoPE tables `cos, sin : [T·H'·W', head_dim]`, head channels split t:h:w = 1/4 : 3/8 : 3/8, interleaved pairs.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import ToraConfig
from .errors import ConfigError

ROPE_THETA = 10000.0


def timestep_sinusoid(timestep: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Float32 sinusoidal embedding `[B, dim]`: cos(t·f_k) then sin(t·f_k), f_k = exp(−ln(max_period)·k/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timestep.device) / half
    )  # [dim/2]
    angles = timestep.float()[:, None] * freqs[None]  # [B, dim/2]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # [B, dim]


class TimestepEmbedding(nn.Module):
    """Sinusoid of width `hidden_dim` → Linear → SiLU → Linear (`time_embedding.linear_1/linear_2`)."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.sinusoid_dim = config.hidden_dim
        self.linear_1 = nn.Linear(config.hidden_dim, config.time_embed_dim, **factory)
        self.linear_2 = nn.Linear(config.time_embed_dim, config.time_embed_dim, **factory)

    def forward(self, timestep: Tensor) -> Tensor:
        # The sinusoid is computed in float32 (timesteps up to 999 lose precision in bf16), then cast.
        emb = timestep_sinusoid(timestep, self.sinusoid_dim).to(self.linear_1.weight.dtype)  # [B, D]
        return self.linear_2(F.silu(self.linear_1(emb)))  # [B, E]


class PatchEmbed(nn.Module):
    """2×2 spatial patches per frame (`proj`, a k=s=p Conv2d) and the text projection (`text_proj`).

    I2V checkpoints carry a learned positional embedding `pos_embedding [1, max_text_len + N, D]` over the joint
    [text; video] sequence of the sample grid. The official SAT code never adds it (spec Q1); it is added to both
    text and video tokens only when `config.use_learned_pos_embed` is set, and then only at that exact grid.
    """

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.config = config
        p, hidden = config.patch_size, config.hidden_dim
        self.proj = nn.Conv2d(config.in_channels, hidden, kernel_size=p, stride=p, **factory)
        self.text_proj = nn.Linear(config.text_dim, hidden, **factory)
        if config.has_learned_pos_embed:
            num_tokens = config.max_text_len + math.prod(self.pos_embed_grid)
            self.register_buffer("pos_embedding", torch.zeros(1, num_tokens, hidden, **factory))

    @property
    def pos_embed_grid(self) -> tuple[int, int, int]:
        """Token grid (T, H', W') the learned positional embedding was trained for."""
        cfg = self.config
        frames = (cfg.sample_frames - 1) // cfg.temporal_compression + 1
        return frames, cfg.sample_height // cfg.patch_size, cfg.sample_width // cfg.patch_size

    def forward(self, latents: Tensor, text_embeds: Tensor) -> tuple[Tensor, Tensor]:
        """latents `[B, T, C, H, W]`, text_embeds `[B, L, text_dim]` → (text `[B, L, D]`, video `[B, N, D]`)."""
        p = self.config.patch_size
        # A k=s=p convolution is a linear map on p×p patches; as one matmul it writes tokens in sequence order.
        patches = rearrange(latents, "b t c (h p) (w q) -> b (t h w) (c p q)", p=p, q=p)  # [B, N, C·p·p]
        video = F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # [B, N, D]
        text = self.text_proj(text_embeds)  # [B, L, D]
        if self.config.use_learned_pos_embed:
            grid = (latents.shape[1], latents.shape[3] // p, latents.shape[4] // p)
            text, video = self._add_pos_embedding(text, video, grid)
        return text, video

    def _add_pos_embedding(
        self, text: Tensor, video: Tensor, grid: tuple[int, int, int]
    ) -> tuple[Tensor, Tensor]:
        num_text, trained = self.config.max_text_len, self.pos_embed_grid
        if text.shape[1] != num_text or grid != trained:
            raise ConfigError(
                f"the learned positional embedding covers {num_text} text tokens and a "
                f"{trained[0]}×{trained[1]}×{trained[2]} (frames × height × width) token grid, got {text.shape[1]} "
                f"text tokens and a {grid[0]}×{grid[1]}×{grid[2]} grid; generate at the training size or set "
                "use_learned_pos_embed=False"
            )
        pos = self.pos_embedding.to(text.dtype)  # [1, L + N, D]
        return text + pos[:, :num_text], video + pos[:, num_text:]


def rope_tables(grid: tuple[int, int, int], dims: tuple[int, int, int], device=None) -> tuple[Tensor, Tensor]:
    """3-D rotary tables `(cos, sin)`, each `[T·H·W, sum(dims)]` float32, rows in (t, h, w) token order.

    Axis a with d_a channels and integer positions 0..n_a−1 uses angles pos·θ^(−2k/d_a), k < d_a/2, each repeated
    for the two channels of its interleaved pair (spec §5, RoPE row).
    """
    angles = []
    for axis, (size, dim) in enumerate(zip(grid, dims, strict=True)):
        inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
        pos = torch.arange(size, dtype=torch.float32, device=device)
        axis_angles = torch.outer(pos, inv_freq).repeat_interleave(2, dim=1)  # [n_a, d_a]
        shape = [1, 1, 1, dim]
        shape[axis] = size
        angles.append(axis_angles.view(shape).expand(*grid, dim))  # [T, H, W, d_a]
    table = torch.cat(angles, dim=-1).flatten(0, 2)  # [T·H·W, head_dim]
    return table.cos(), table.sin()


def cached_rope_tables(
    grid: tuple[int, int, int], dims: tuple[int, int, int], device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """`rope_tables` cast to `dtype`; on the host built once per (grid, dims, dtype) and shared: treat as read-only.

    Every denoising step of a generation uses the same grid, so on the CPU the tables are not rebuilt per forward.
    Tables on a GPU are never cached: a module-level cache would hold device memory after the node finished, which
    ComfyUI can neither see nor evict (the simulated-GPU node test found 4.3 MiB per size at 720×480×49); building
    them there is a few elementwise kernels per forward.
    """
    if torch.device(device).type == "cpu":
        return _host_rope_tables(grid, dims, dtype)
    return _rope_tables_as(grid, dims, device, dtype)


@functools.lru_cache(maxsize=16)
def _host_rope_tables(grid: tuple[int, int, int], dims: tuple[int, int, int], dtype: torch.dtype):
    return _rope_tables_as(grid, dims, torch.device("cpu"), dtype)


def _rope_tables_as(grid, dims, device, dtype) -> tuple[Tensor, Tensor]:
    # ordinary tensors even when first requested under inference mode, so a later autograd run may use them
    with torch.inference_mode(False):
        cos, sin = rope_tables(grid, dims, device)  # [T·H·W, head_dim] float32 each
        return cos.to(dtype), sin.to(dtype)
