"""The Tora transformer: CogVideoX-5B (T2V / I2V) DiT plus the trajectory extractor and 42 motion-guidance fusers.

Source: `tora_spec.md` §5 (base DiT as released, SAT numerics), §4.2 (where the fuser acts), §3 (extractor).
State-dict names are exactly those of the official diffusers-version `ToraTransformer3DModel`
(`manifests/tora_t2v_transformer_diffusers.tsv`); a config without motion modules is plain CogVideoX-5B.

Layouts: latents `[B, T, 16, H, W]` (+ I2V image latents `[B, T, 16, H, W]`, concatenated after them on channels),
timestep `[B]` (integer DDPM step 0..999), T5 embeddings `[B, L, text_dim]`; tokens: text `[B, L, D]` kept beside
video `[B, N, D]`, N = T·(H/2)·(W/2), joined only inside attention as [text; video]; output v `[B, T, 16, H, W]`.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .attention import AttentionFn, JointAttention, attention
from .config import LATENT_CHANNELS, ToraConfig
from .embeddings import PatchEmbed, TimestepEmbedding, cached_rope_tables
from .errors import ConfigError
from .motion import MotionGuidanceFuser, TrajectoryExtractor

# run(block, *block arguments) → the block's output: its forward body, or a compiled copy of it
BlockFn = Callable[..., object]


def _modulated_norm(norm: nn.LayerNorm, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, norm(x), 1 + scale)  # LN(x)·(1 + scale) + shift


@dataclass(frozen=True)
class BlockInputs:
    """Everything the block stack of one forward needs, made once by `prepare` (one value per call, never stored).

    video `[B, N, D]` and text `[B, L, D]` tokens entering block 0, emb `[B, E]`, grid (T, h, w) in patches,
    positions (RoPE tables `[N, head_dim]` for CogVideoX; the temporal table `[N, D]` for the ST-DiT), one fuser
    callable per block (or None), and the attention kernel.
    """

    video: Tensor
    text: Tensor
    emb: Tensor
    grid: tuple[int, int, int]
    positions: tuple[Tensor, ...]
    fusers: list[Callable[[Tensor], Tensor] | None]
    attention_fn: AttentionFn


class AdaLayerNormZero(nn.Module):
    """`norm1` / `norm2`: SiLU → Linear → (shift, scale, gate) for video then for text; one shared LayerNorm."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.linear = nn.Linear(config.time_embed_dim, 6 * config.hidden_dim, **factory)
        self.norm = nn.LayerNorm(config.hidden_dim, eps=config.norm_eps, **factory)

    def forward(self, video: Tensor, text: Tensor, emb: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """→ modulated video `[B, N, D]`, modulated text `[B, L, D]`, video gate and text gate `[B, 1, D]`."""
        modulation = self.linear(F.silu(emb))[:, None]  # [B, 1, 6·D]
        shift, scale, gate, text_shift, text_scale, text_gate = modulation.chunk(6, dim=-1)
        video = _modulated_norm(self.norm, video, shift, scale)
        text = _modulated_norm(self.norm, text, text_shift, text_scale)
        return video, text, gate, text_gate


class AdaLayerNormOut(nn.Module):
    """`norm_out`: SiLU → Linear → (shift, scale) — SAT order, also diffusers' CogVideoX order — then modulated LN."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.linear = nn.Linear(config.time_embed_dim, 2 * config.hidden_dim, **factory)
        self.norm = nn.LayerNorm(config.hidden_dim, eps=config.out_norm_eps, **factory)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        shift, scale = self.linear(F.silu(emb))[:, None].chunk(2, dim=-1)  # [B, 1, D] each
        return _modulated_norm(self.norm, x, shift, scale)


class GeluProjection(nn.Module):
    """`ff.net.0`: Linear (`proj`) then tanh-approximated GELU."""

    def __init__(self, dim: int, inner: int, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """`ff`: `net.0.proj` → GELU(tanh) → `net.2`; slot 1 (a parameter-free dropout in the release) is absent."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        hidden, inner = config.hidden_dim, config.mlp_ratio * config.hidden_dim
        layers = [
            ("0", GeluProjection(hidden, inner, device, dtype)),
            ("2", nn.Linear(inner, hidden, device=device, dtype=dtype)),
        ]
        self.net = nn.Sequential(OrderedDict(layers))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ToraBlock(nn.Module):
    """`transformer_blocks.{i}`: adaLN-zero, joint attention (motion fused into its video input), adaLN-zero, MLP."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.norm1 = AdaLayerNormZero(config, device, dtype)
        self.attn1 = JointAttention(config, device, dtype)
        self.norm2 = AdaLayerNormZero(config, device, dtype)
        self.ff = FeedForward(config, device, dtype)

    def forward(
        self,
        video: Tensor,
        text: Tensor,
        emb: Tensor,
        rope: tuple[Tensor, Tensor],
        attention_fn: AttentionFn,
        fuse: Callable[[Tensor], Tensor] | None = None,
        run: BlockFn | None = None,
    ) -> tuple[Tensor, Tensor]:
        """video `[B, N, D]`, text `[B, L, D]`, emb `[B, E]` → updated (video, text).

        `run(block, video, text, emb, rope, attention_fn, fuse)` replaces the body (a compiled copy of it,
        `compiled_blocks.py`); it is called from here so forward hooks such as block swap's still run around it.
        """
        if run is not None:
            return run(self, video, text, emb, rope, attention_fn, fuse)
        video_in, text_in, gate, text_gate = self.norm1(video, text, emb)
        if fuse is not None:
            video_in = fuse(video_in)  # only the video attention input carries motion (spec §4.2)
        attn = self.attn1(torch.cat([text_in, video_in], dim=1), rope, attention_fn)  # [B, L + N, D]
        text_attn, video_attn = attn.split([text.shape[1], video.shape[1]], dim=1)
        video = torch.addcmul(video, gate, video_attn)
        text = torch.addcmul(text, text_gate, text_attn)

        video_in, text_in, gate, text_gate = self.norm2(video, text, emb)
        # One MLP call on the joined tokens: on CPU one large GEMM beats a text-sized and a video-sized one by more
        # than the copy costs (~5-10 % of the MLP at 72-990 video tokens per row, bench_transformer_step.py).
        ff = self.ff(torch.cat([text_in, video_in], dim=1))  # [B, L + N, D]
        text_ff, video_ff = ff.split([text.shape[1], video.shape[1]], dim=1)
        video = torch.addcmul(video, gate, video_ff)
        text = torch.addcmul(text, text_gate, text_ff)
        return video, text


class ToraTransformer(nn.Module):
    """CogVideoX-5B DiT with Tora's trajectory extractor (`traj_extractor`) and fusers (`fuser.{i}`).

    `attention_fn` is the attention kernel used by every block (default: PyTorch SDPA); `forward` may override it
    per call. BatchNorm in the extractor always uses the stored running statistics.
    """

    def __init__(
        self, config: ToraConfig, attention_fn: AttentionFn = attention, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.config = config
        self.attention_fn = attention_fn
        self.patch_embed = PatchEmbed(config, device, dtype)
        self.time_embedding = TimestepEmbedding(config, device, dtype)
        self.transformer_blocks = nn.ModuleList(
            ToraBlock(config, device, dtype) for _ in range(config.num_layers)
        )
        self.norm_final = nn.LayerNorm(config.hidden_dim, eps=config.norm_eps, device=device, dtype=dtype)
        self.norm_out = AdaLayerNormOut(config, device, dtype)
        out_features = config.patch_size**2 * config.out_channels
        self.proj_out = nn.Linear(config.hidden_dim, out_features, device=device, dtype=dtype)
        if config.has_motion_modules:
            self.traj_extractor = TrajectoryExtractor(config, device, dtype)
            self.fuser = nn.ModuleList(
                MotionGuidanceFuser(config, device, dtype) for _ in range(config.num_layers)
            )

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype: the dtype of the parameters."""
        return self.proj_out.weight.dtype

    def extract_motion(self, motion_latents: Tensor) -> list[Tensor]:
        """Flow latents `[B, T, 16, h, w]` → `num_layers` features `[(B·T), motion_channels, h/2, w/2]`.

        Deterministic; compute once per generation and pass the list to every `forward` call.
        """
        self._require_motion_modules("extract_motion")
        if motion_latents.ndim != 5 or motion_latents.shape[2] != LATENT_CHANNELS:
            raise ConfigError(
                f"motion latents must be [B, T, {LATENT_CHANNELS}, h, w] (VAE-encoded flow video, frames before "
                f"channels), got shape {list(motion_latents.shape)}"
            )
        return self.traj_extractor(motion_latents)

    def forward(self, *args, **kwargs) -> Tensor:
        """Predict v `[B, T, 16, H, W]` (in the parameters' dtype); arguments as `prepare`."""
        inputs = self.prepare(*args, **kwargs)
        return self.finish(inputs, self.run_blocks(inputs))

    # The forward in three parts, so a per-run caller (`speed.NetworkRunner`) can skip or compile the block stack.

    def prepare(
        self,
        latents: Tensor,
        timestep: Tensor,
        text_embeds: Tensor,
        motion_features: Sequence[Tensor] | None = None,
        image_latents: Tensor | None = None,
        motion_scale: float = 1.0,
        attention_fn: AttentionFn | None = None,
    ) -> BlockInputs:
        """Checks, embeddings and positions: what `forward` does before block 0.

        latents `[B, T, 16, H, W]`; timestep `[B]` or `[1]`; text_embeds `[B, L, text_dim]`; motion_features from
        `extract_motion` for batch B or 1 (one per block, `None` = plain CogVideoX); image_latents `[B or 1, T, 16, H, W]`
        for I2V models only; motion_scale multiplies every fuser's GroupNorm(h)·γ + β.
        """
        x = self._model_input(latents, image_latents)  # [B, T, C_in, H, W]
        batch, frames, _, height, width = latents.shape
        p, dtype = self.config.patch_size, self.dtype
        self._check_text(text_embeds, batch)
        emb = self.time_embedding(self._timesteps(timestep, batch))  # [B, E]
        text, video = self.patch_embed(x.to(dtype), text_embeds.to(dtype))  # [B, L, D], [B, N, D]
        grid = (frames, height // p, width // p)
        rope = cached_rope_tables(grid, self.config.rope_dims, latents.device, dtype)  # [N, head_dim] each
        fusers = self._fusers(motion_features, batch, grid, motion_scale)
        return BlockInputs(video, text, emb, grid, rope, fusers, attention_fn or self.attention_fn)

    def modulated_input(self, inputs: BlockInputs) -> Tensor:
        """Block 0's timestep-modulated video input `[B, N, D]` (before motion fusion): the step cache's probe."""
        return self.transformer_blocks[0].norm1(inputs.video, inputs.text, inputs.emb)[0]

    def run_blocks(self, inputs: BlockInputs, run: BlockFn | None = None) -> Tensor:
        """Video tokens `[B, N, D]` after the last block; `run` replaces each block's body (compiled blocks)."""
        video, text = inputs.video, inputs.text
        for block, fuse in zip(self.transformer_blocks, inputs.fusers, strict=True):
            video, text = block(video, text, inputs.emb, inputs.positions, inputs.attention_fn, fuse, run=run)
        return video

    def finish(self, inputs: BlockInputs, video: Tensor) -> Tensor:
        """Video tokens `[B, N, D]` after the blocks → v `[B, T, 16, H, W]`."""
        frames, height, _ = inputs.grid
        p = self.config.patch_size
        # norm_final acts per token, so normalising only the video tokens equals SAT's LN over [text; video].
        video = self.proj_out(self.norm_out(self.norm_final(video), inputs.emb))  # [B, N, 16·p·p]
        return rearrange(video, "b (t h w) (c p q) -> b t c (h p) (w q)", t=frames, h=height, p=p, q=p)

    def _require_motion_modules(self, what: str) -> None:
        if not self.config.has_motion_modules:
            raise ConfigError(
                f"{what}: this model has no Tora motion modules (plain CogVideoX checkpoint); load a Tora "
                "checkpoint with traj_extractor/fuser weights, or run without motion"
            )

    def _model_input(self, latents: Tensor, image_latents: Tensor | None) -> Tensor:
        cfg = self.config
        if latents.ndim != 5 or latents.shape[2] != LATENT_CHANNELS:
            raise ConfigError(
                f"latents must be [B, T, {LATENT_CHANNELS}, H, W] (frames before channels), got {list(latents.shape)}"
            )
        if latents.shape[3] % cfg.patch_size or latents.shape[4] % cfg.patch_size:
            raise ConfigError(
                f"latent height and width must be multiples of {cfg.patch_size}, got {latents.shape[3]}×"
                f"{latents.shape[4]}; use a pixel size divisible by {8 * cfg.patch_size}"
            )
        if not cfg.is_i2v:
            if image_latents is not None:
                raise ConfigError(
                    "image_latents were given to a text-to-video model; load the I2V checkpoint"
                )
            return latents
        if image_latents is None:
            raise ConfigError("this is an image-to-video model: pass image_latents [B, T, 16, H, W]")
        batch = latents.shape[0]
        if image_latents.shape[0] not in (1, batch) or image_latents.shape[1:] != latents.shape[1:]:
            raise ConfigError(
                f"image_latents must be [{batch} or 1, {', '.join(map(str, latents.shape[1:]))}] like the latents, "
                f"got {list(image_latents.shape)}"
            )
        image_latents = image_latents.to(latents.dtype).expand(batch, -1, -1, -1, -1)
        return torch.cat([latents, image_latents], dim=2)  # noise first, image second (spec §5.1)

    def _check_text(self, text_embeds: Tensor, batch: int) -> None:
        if (
            text_embeds.ndim != 3
            or text_embeds.shape[0] != batch
            or text_embeds.shape[2] != self.config.text_dim
        ):
            raise ConfigError(
                f"text_embeds must be [{batch}, L, {self.config.text_dim}] (T5 hidden states), "
                f"got {list(text_embeds.shape)}"
            )

    @staticmethod
    def _timesteps(timestep: Tensor, batch: int) -> Tensor:
        if timestep.ndim != 1 or timestep.shape[0] not in (1, batch):
            raise ConfigError(f"timestep must have shape [{batch}] or [1], got {list(timestep.shape)}")
        return timestep.expand(batch)

    def _fusers(
        self, features: Sequence[Tensor] | None, batch: int, grid: tuple[int, int, int], strength: float
    ) -> list[Callable[[Tensor], Tensor] | None]:
        """One motion-fusing callable per block (all `None` without motion features)."""
        if features is None:
            return [None] * self.config.num_layers
        self._require_motion_modules("motion_features")
        frames, height, width = grid
        expected = (self.config.motion_channels, height, width)
        if len(features) != self.config.num_layers:
            raise ConfigError(
                f"expected {self.config.num_layers} motion features (one per block, from extract_motion), "
                f"got {len(features)}"
            )
        for feature in features:
            if feature.shape[0] not in (frames, batch * frames) or tuple(feature.shape[1:]) != expected:
                raise ConfigError(
                    f"motion features must be [(B·T) or T, {', '.join(map(str, expected))}] with T={frames} for "
                    f"these latents, got {list(feature.shape)}; encode the trajectory at the video's size and "
                    "frame count"
                )
        return [
            functools.partial(fuser, feature=feature.to(self.dtype), strength=strength)
            for fuser, feature in zip(self.fuser, features, strict=True)
        ]


def build_transformer(
    config: ToraConfig, device=None, dtype: torch.dtype | None = None, attention_fn: AttentionFn = attention
) -> ToraTransformer:
    """Build a `ToraTransformer` directly on `device` (e.g. "meta" before loading weights) in `dtype`, eval mode."""
    return ToraTransformer(config, attention_fn=attention_fn, device=device, dtype=dtype).eval()
