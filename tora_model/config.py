"""Configuration of the Tora transformer (CogVideoX-5B DiT + trajectory extractor + motion-guidance fusers).

Numbers follow `tora_spec.md` §3–§5: 42 blocks of width 3072 (48 heads × 64), 2×2 patches, T5-XXL text (4096) projected
to the model width and placed before the video tokens, a 512-wide time embedding, and 3-D RoPE splitting each head
16:24:24 over (t, h, w). I2V doubles the input channels (noisy latents + image latents) and carries a learned
positional embedding that the official SAT code never adds (spec Q1), so adding it is an opt-in flag.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError

LATENT_CHANNELS = 16  # CogVideoX VAE latent channels
BACKBONES = ("cogvideox", "st_dit")


@dataclass(frozen=True)
class ToraConfig:
    """Shape of one Tora transformer. Frozen: per-run settings travel elsewhere."""

    num_layers: int = 42  # DiT blocks; also the number of fusers and extractor stages
    num_heads: int = 48
    head_dim: int = 64  # split 1/4 : 3/8 : 3/8 between the t, h, w RoPE axes
    in_channels: int = 16  # 16 for T2V, 32 for I2V ([noisy, image] latents on channels)
    out_channels: int = 16
    patch_size: int = 2  # spatial only; released weights have no temporal patching
    text_dim: int = 4096  # T5 v1.1 XXL hidden size
    max_text_len: int = 226  # T5 tokens, padded, no attention mask
    time_embed_dim: int = 512
    mlp_ratio: int = 4
    norm_eps: float = 1e-5  # block LayerNorms and the final LayerNorm over [text; video]
    qk_norm_eps: float = 1e-6  # per-head q/k LayerNorm
    out_norm_eps: float = 1e-6  # modulated LayerNorm before the output projection (SAT value)
    # Learned positional embedding (I2V checkpoints carry one; official SAT code ignores it).
    has_learned_pos_embed: bool = False
    use_learned_pos_embed: bool = False
    sample_frames: int = 49  # pixel frames the learned positional embedding was built for
    sample_height: int = 60  # latent height of that embedding
    sample_width: int = 90
    temporal_compression: int = 4
    # Pixels per latent along H and W in the VAE whose latent space this transformer denoises (8 for CogVideoX; the
    # tiny trained model pairs with a ×4 VAE). Sets the latent grid of a generation at a given pixel size.
    vae_spatial_compression: int = 8
    # Tora motion modules: trajectory extractor (TE) and one motion-guidance fuser (MGF) per block.
    has_motion_modules: bool = True
    motion_channels: int = 128  # TE feature width
    extractor_blocks_per_stage: int = 2
    fuser_groups: int = 32  # GroupNorm groups of the fuser's flow_cond_norm
    # σ (pixels) of the Gaussian that spreads each trajectory displacement into the flow video the model reads
    # (spec §2.4: 10 px for the release at 720×480). A model trained at another pixel scale names its own.
    flow_sigma: float = 10.0
    # "cogvideox" = the released joint-attention DiT (transformer.py); "st_dit" = the paper's OpenSora-style
    # spatial-temporal DiT (st_dit.py), num_layers counting spatial and temporal blocks together.
    backbone: str = "cogvideox"

    def __post_init__(self) -> None:
        if self.head_dim % 8:
            raise ConfigError(
                f"head_dim must be a multiple of 8 for the 1/4:3/8:3/8 RoPE split, got {self.head_dim}; "
                "use 64 (the release) or another multiple of 8"
            )
        if self.in_channels not in (LATENT_CHANNELS, 2 * LATENT_CHANNELS):
            raise ConfigError(
                f"in_channels must be {LATENT_CHANNELS} (T2V) or {2 * LATENT_CHANNELS} (I2V), got {self.in_channels}"
            )
        if self.use_learned_pos_embed and not self.has_learned_pos_embed:
            raise ConfigError(
                "use_learned_pos_embed=True needs a config with has_learned_pos_embed=True (I2V)"
            )
        compression = self.vae_spatial_compression
        if compression < 1 or compression & (compression - 1):
            raise ConfigError(
                f"vae_spatial_compression must be a power of two (8 for CogVideoX), got {compression}"
            )
        if not (math.isfinite(self.flow_sigma) and self.flow_sigma > 0):
            raise ConfigError(
                f"flow_sigma must be a positive number of pixels (10 for the release), got {self.flow_sigma}"
            )
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone == "st_dit" and self.num_layers % 2:
            raise ConfigError(
                f"the st_dit backbone alternates spatial and temporal blocks: num_layers must be even, "
                f"got {self.num_layers}"
            )
        if self.hidden_dim % self.fuser_groups:
            raise ConfigError(
                f"hidden width {self.hidden_dim} (num_heads × head_dim) is not divisible by the fuser's "
                f"{self.fuser_groups} GroupNorm groups; choose num_heads/head_dim or fuser_groups so that it is"
            )

    @property
    def hidden_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def trained_size(self) -> tuple[int, int]:
        """(width, height) in pixels the weights were trained at: the sample latent grid × the VAE compression."""
        return (
            self.sample_width * self.vae_spatial_compression,
            self.sample_height * self.vae_spatial_compression,
        )

    @property
    def is_i2v(self) -> bool:
        return self.in_channels == 2 * LATENT_CHANNELS

    @property
    def fuser_mid_channels(self) -> int:
        """Width of the fuser's spatial convs (768 = 3072 / 4 in the release)."""
        return self.hidden_dim // 4

    @property
    def rope_dims(self) -> tuple[int, int, int]:
        """Per-head channels given to the (t, h, w) RoPE axes: 16, 24, 24 at head_dim 64."""
        return self.head_dim // 4, self.head_dim // 8 * 3, self.head_dim // 8 * 3

    def replace(self, **changes) -> ToraConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> ToraConfig:
        try:
            return PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, object]) -> ToraConfig:
        """Infer the config from a state dict in the canonical (diffusers-version) layout.

        Only shapes are read, so meta tensors and lazily opened safetensors slices work too.
        """

        def shape(key: str) -> tuple[int, ...]:
            if key not in state_dict:
                raise ConfigError(f"cannot infer the Tora config: key {key!r} is missing from the state dict")
            return tuple(state_dict[key].shape)

        proj = shape("patch_embed.proj.weight")  # [hidden, in_channels, p, p]
        hidden, in_channels, patch = proj[0], proj[1], proj[2]
        q_norm = shape("transformer_blocks.0.attn1.norm_q.weight")  # [head_dim]
        head_dim = q_norm[0]
        layer_ids = {
            int(m.group(1)) for k in state_dict if (m := re.match(r"transformer_blocks\.(\d+)\.", k))
        }
        has_motion = any(k.startswith("traj_extractor.") for k in state_dict)
        fields = dict(
            num_layers=len(layer_ids),
            num_heads=hidden // head_dim,
            head_dim=head_dim,
            in_channels=in_channels,
            out_channels=shape("proj_out.weight")[0] // (patch * patch),
            patch_size=patch,
            text_dim=shape("patch_embed.text_proj.weight")[1],
            time_embed_dim=shape("time_embedding.linear_1.weight")[0],
            mlp_ratio=shape("transformer_blocks.0.ff.net.0.proj.weight")[0] // hidden,
            has_learned_pos_embed="patch_embed.pos_embedding" in state_dict,
            has_motion_modules=has_motion,
        )
        if has_motion:
            fields["motion_channels"] = shape("traj_extractor.conv_in.weight")[0]
            body_ids = {
                int(m.group(1)) for k in state_dict if (m := re.match(r"traj_extractor\.body\.(\d+)\.", k))
            }
            fields["extractor_blocks_per_stage"] = len(body_ids) // fields["num_layers"]
        return cls(**fields)


# A few layers and small widths: a forward runs in well under a second on a CPU. Text width 32 matches the tiny T5
# used in tests; 32 channels keep the fuser GroupNorm(32) valid.
_TINY = ToraConfig(
    num_layers=2,
    num_heads=2,
    head_dim=16,
    text_dim=32,
    max_text_len=16,
    time_embed_dim=32,
    motion_channels=16,
    sample_frames=9,
    sample_height=8,
    sample_width=12,
)

PRESETS: dict[str, ToraConfig] = {
    "cogvideox_5b_t2v": ToraConfig(),
    "cogvideox_5b_i2v": ToraConfig(in_channels=32, has_learned_pos_embed=True),
    "tiny": _TINY,
    "tiny_i2v": _TINY.replace(in_channels=32, has_learned_pos_embed=True),
    # The paper's spatial-temporal DiT at a CPU-trainable size (tora_model.st_dit; weights from tora_model.tiny.train):
    # 4 spatial + 4 temporal blocks of width 128 (a 2×2 patch of [noisy, image] latents is 128 values: a narrower
    # width could not carry both, and a width-64 model did not even copy the start frame), I2V, a 16-wide null text
    # context, on the ×4 tiny VAE (96×64 pixels → 24×16 latents → 12×8 tokens per frame).
    "tiny_st": ToraConfig(
        backbone="st_dit",
        num_layers=8,
        num_heads=4,
        head_dim=32,
        in_channels=32,
        text_dim=16,
        max_text_len=1,
        time_embed_dim=64,
        motion_channels=32,
        extractor_blocks_per_stage=1,
        sample_frames=17,
        sample_height=16,
        sample_width=24,
        vae_spatial_compression=4,
    ),
}
