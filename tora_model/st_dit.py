"""The paper's spatial-temporal DiT backbone (OpenSora / Latte variant 1) with Tora's extractor and fusers.

Source: Tora paper §3 (OpenSora STDiT: spatial blocks — spatial self-attention, cross-attention to the text, MLP —
alternating with temporal blocks — temporal self-attention, MLP — each with adaLN conditioning on the timestep;
the trajectory extractor gives one feature per block and the motion-guidance fuser modulates each block's
attention input, `tora_spec.md` §3–§4). The released Tora is CogVideoX-based (`transformer.py`); this backbone was
never released and is trained here from scratch (`tora_model.tiny.train`). It shares `PatchEmbed`, `TimestepEmbedding`,
`TrajectoryExtractor`, `MotionGuidanceFuser` and the attention kernel with the CogVideoX path, and has the same call
signature as `ToraTransformer`, so `pipeline.sample_latents` / `generate` and `motion_guidance` run it unchanged.

Layouts: latents `[B, T, 16, H, W]` (+ I2V image latents on channels), timestep `[B]`, text `[B, L, text_dim]`;
video tokens `[B, N, D]` in (t, h, w) order, N = T·(H/p)·(W/p); spatial attention over `[(B·T), h·w, D]`, temporal
attention over `[(B·h·w), T, D]`; output v `[B, T, 16, H, W]`. Positions: fixed sin-cos tables (2-D spatial added
before the first block, 1-D temporal added before the first temporal block, as in OpenSora), not learned.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .attention import AttentionFn, attention
from .config import ToraConfig
from .embeddings import PatchEmbed, TimestepEmbedding, timestep_sinusoid
from .errors import CheckpointError, ConfigError
from .json_files import Entry, entry_problems, finite_number, parse_json_object
from .motion import MotionGuidanceFuser, TrajectoryExtractor
from .transformer import BlockFn, BlockInputs, ToraTransformer

BACKBONE_KEY = "tora_backbone"  # safetensors metadata: which backbone a file holds
CONFIG_KEY = "tora_config"  # safetensors metadata: the ToraConfig fields as JSON


def _sincos(positions: Tensor, dim: int) -> Tensor:
    """Fixed sin-cos embedding of float positions `[N]` → `[N, dim]`."""
    return timestep_sinusoid(positions, dim)


def spatial_positions(height: int, width: int, dim: int, device=None) -> Tensor:
    """2-D sin-cos table `[h·w, dim]`: half the channels encode the row, half the column."""
    rows = torch.arange(height, device=device, dtype=torch.float32).repeat_interleave(width)  # [h·w]
    cols = torch.arange(width, device=device, dtype=torch.float32).repeat(height)  # [h·w]
    return torch.cat([_sincos(rows, dim // 2), _sincos(cols, dim // 2)], dim=-1)  # [h·w, D]


class SelfAttention(nn.Module):
    """q/k/v projections, per-head q/k LayerNorm, the shared attention kernel, output projection."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        hidden = config.hidden_dim
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(hidden, 3 * hidden, **factory)
        self.norm_q = nn.LayerNorm(config.head_dim, eps=config.qk_norm_eps, **factory)
        self.norm_k = nn.LayerNorm(config.head_dim, eps=config.qk_norm_eps, **factory)
        self.proj = nn.Linear(hidden, hidden, **factory)

    def forward(self, x: Tensor, attention_fn: AttentionFn, context: Tensor | None = None) -> Tensor:
        """x `[B, S, D]` (queries), context `[B, S', D]` (keys/values; None = x) → `[B, S, D]`."""
        hidden = x.shape[-1]
        # weights stored narrower than the activations (fp8 storage) compute in the activation dtype
        q_w, kv_w = self.qkv.weight.to(x.dtype).split([hidden, 2 * hidden])
        q_b, kv_b = self.qkv.bias.to(x.dtype).split([hidden, 2 * hidden])
        q = F.linear(x, q_w, q_b)  # [B, S, D]
        k, v = F.linear(x if context is None else context, kv_w, kv_b).chunk(2, dim=-1)  # [B, S', D] each
        q, k, v = (rearrange(t, "b s (n d) -> b n s d", n=self.num_heads) for t in (q, k, v))
        return self.proj(attention_fn(self.norm_q(q), self.norm_k(k), v))  # [B, S, D]


class Mlp(nn.Module):
    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        inner = config.mlp_ratio * config.hidden_dim
        self.fc1 = nn.Linear(config.hidden_dim, inner, **factory)
        self.fc2 = nn.Linear(inner, config.hidden_dim, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class STBlock(nn.Module):
    """One spatial or temporal block: adaLN(shift, scale, gate) → [fuser] → self-attention over its axis,
    (spatial only) cross-attention to the text, adaLN → MLP. Gated residuals start at zero (DiT adaLN-zero)."""

    def __init__(self, config: ToraConfig, temporal: bool, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        hidden = config.hidden_dim
        self.temporal = temporal
        self.modulation = nn.Linear(config.time_embed_dim, 6 * hidden, **factory)
        self.norm1 = nn.LayerNorm(hidden, eps=config.norm_eps, elementwise_affine=False, **factory)
        self.attn = SelfAttention(config, device, dtype)
        if not temporal:
            self.norm_cross = nn.LayerNorm(hidden, eps=config.norm_eps, **factory)
            self.cross_attn = SelfAttention(config, device, dtype)
        self.norm2 = nn.LayerNorm(hidden, eps=config.norm_eps, elementwise_affine=False, **factory)
        self.mlp = Mlp(config, device, dtype)

    def forward(
        self,
        video: Tensor,
        text: Tensor,
        emb: Tensor,
        grid: tuple[int, int, int],
        attention_fn: AttentionFn,
        fuse: Callable[[Tensor], Tensor] | None = None,
        run: BlockFn | None = None,
    ) -> Tensor:
        """video `[B, N, D]`, text `[B, L, D]`, emb `[B, E]` → video `[B, N, D]`; `run` as in `ToraBlock`."""
        if run is not None:
            return run(self, video, text, emb, grid, attention_fn, fuse)
        frames, height, width = grid
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(emb))[:, None].chunk(6, dim=-1)
        x = torch.addcmul(shift1, self.norm1(video), 1 + scale1)  # [B, N, D]
        if fuse is not None:
            x = fuse(x)  # motion enters the attention input of the video tokens (spec §4.2)
        if self.temporal:
            x = rearrange(x, "b (t s) d -> (b s) t d", t=frames)  # [(B·h·w), T, D]
            x = rearrange(self.attn(x, attention_fn), "(b s) t d -> b (t s) d", s=height * width)
        else:
            x = rearrange(x, "b (t s) d -> (b t) s d", t=frames)  # [(B·T), h·w, D]
            x = rearrange(self.attn(x, attention_fn), "(b t) s d -> b (t s) d", t=frames)
        video = torch.addcmul(video, gate1, x)
        if not self.temporal:
            video = video + self.cross_attn(self.norm_cross(video), attention_fn, context=text)  # [B, N, D]
        x = torch.addcmul(shift2, self.norm2(video), 1 + scale2)
        return torch.addcmul(video, gate2, self.mlp(x))

    def modulated_input(self, video: Tensor, emb: Tensor) -> Tensor:
        """The attention input before motion fusion, `[B, N, D]`: what `forward` computes first."""
        shift1, scale1 = self.modulation(F.silu(emb))[:, None].chunk(6, dim=-1)[:2]
        return torch.addcmul(shift1, self.norm1(video), 1 + scale1)


class FinalLayer(nn.Module):
    """LayerNorm modulated by (shift, scale) from the timestep, then the projection to p·p·16 per token."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        hidden = config.hidden_dim
        self.norm = nn.LayerNorm(hidden, eps=config.out_norm_eps, elementwise_affine=False, **factory)
        self.modulation = nn.Linear(config.time_embed_dim, 2 * hidden, **factory)
        self.proj = nn.Linear(hidden, config.patch_size**2 * config.out_channels, **factory)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        shift, scale = self.modulation(F.silu(emb))[:, None].chunk(2, dim=-1)  # [B, 1, D] each
        return self.proj(torch.addcmul(shift, self.norm(x), 1 + scale))  # [B, N, p·p·16]


class STDiTTransformer(nn.Module):
    """Spatial-temporal DiT (blocks 0, 2, 4, … spatial; 1, 3, 5, … temporal) + `traj_extractor` + `fuser.{i}`."""

    def __init__(
        self, config: ToraConfig, attention_fn: AttentionFn = attention, device=None, dtype=None
    ) -> None:
        super().__init__()
        if config.backbone != "st_dit":
            raise ConfigError(
                f"STDiTTransformer needs a config with backbone='st_dit', got {config.backbone!r}"
            )
        self.config = config
        self.attention_fn = attention_fn
        self.patch_embed = PatchEmbed(config, device, dtype)
        self.time_embedding = TimestepEmbedding(config, device, dtype)
        self.blocks = nn.ModuleList(
            STBlock(config, temporal=i % 2 == 1, device=device, dtype=dtype) for i in range(config.num_layers)
        )
        self.final = FinalLayer(config, device, dtype)
        if config.has_motion_modules:
            self.traj_extractor = TrajectoryExtractor(config, device, dtype)
            self.fuser = nn.ModuleList(
                MotionGuidanceFuser(config, device, dtype) for _ in range(config.num_layers)
            )
        if device is None or torch.device(device).type != "meta":
            self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT init: Xavier linears, zero adaLN modulations and output projection (each block starts as identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
        for layer in (self.final.modulation, self.final.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.final.proj.weight.dtype

    @property
    def transformer_blocks(self) -> nn.ModuleList:
        """`blocks` under the CogVideoX path's name, for fp8 storage and block swap (state-dict keys unchanged)."""
        return self.blocks

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
        """Checks, embeddings and position tables: what `forward` does before block 0."""
        x = self._model_input(latents, image_latents)  # [B, T, C_in, H, W]
        batch, frames, _, height, width = latents.shape
        p, dtype = self.config.patch_size, self.dtype
        self._check_text(text_embeds, batch)
        emb = self.time_embedding(self._timesteps(timestep, batch))  # [B, E]
        text, video = self.patch_embed(x.to(dtype), text_embeds.to(dtype))
        grid = (frames, height // p, width // p)
        hidden = self.config.hidden_dim
        space = spatial_positions(grid[1], grid[2], hidden, latents.device).to(dtype)  # [h·w, D]
        steps = torch.arange(frames, device=latents.device, dtype=torch.float32)  # [T]
        time = _sincos(steps, hidden).to(dtype)  # [T, D]
        video = video + repeat(space, "s d -> (t s) d", t=frames)  # [B, N, D]
        time = repeat(time, "t d -> (t s) d", s=grid[1] * grid[2])  # [N, D]
        fusers = self._fusers(motion_features, batch, grid, motion_scale)
        return BlockInputs(video, text, emb, grid, (time,), fusers, attention_fn or self.attention_fn)

    def modulated_input(self, inputs: BlockInputs) -> Tensor:
        """Block 0's timestep-modulated video input `[B, N, D]` (before motion fusion): the step cache's probe."""
        return self.blocks[0].modulated_input(inputs.video, inputs.emb)

    def run_blocks(self, inputs: BlockInputs, run: BlockFn | None = None) -> Tensor:
        """Video tokens `[B, N, D]` after the last block; `run` replaces each block's body (compiled blocks)."""
        video, (time,) = inputs.video, inputs.positions
        for i, (block, fuse) in enumerate(zip(self.blocks, inputs.fusers, strict=True)):
            if i == 1:
                video = video + time  # the temporal table joins before the first temporal block
            video = block(video, inputs.text, inputs.emb, inputs.grid, inputs.attention_fn, fuse, run=run)
        return video

    def finish(self, inputs: BlockInputs, video: Tensor) -> Tensor:
        """Video tokens `[B, N, D]` after the blocks → v `[B, T, 16, H, W]`."""
        frames, height, _ = inputs.grid
        p = self.config.patch_size
        out = self.final(video, inputs.emb)  # [B, N, 16·p·p]
        return rearrange(out, "b (t h w) (c p q) -> b t c (h p) (w q)", t=frames, h=height, p=p, q=p)

    # The forward (prepare → run_blocks → finish), input checks, motion-feature checks and the per-block fuser
    # callables are those of the CogVideoX path.
    forward = ToraTransformer.forward
    extract_motion = ToraTransformer.extract_motion
    _require_motion_modules = ToraTransformer._require_motion_modules
    _model_input = ToraTransformer._model_input
    _check_text = ToraTransformer._check_text
    _timesteps = staticmethod(ToraTransformer._timesteps)
    _fusers = ToraTransformer._fusers


def save_st_transformer(model: STDiTTransformer, path: str | Path) -> None:
    """Write the weights as one safetensors file whose header names the backbone and its config."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {BACKBONE_KEY: "st_dit", CONFIG_KEY: json.dumps(dataclasses.asdict(model.config))}
    save_file(tensors, str(path), metadata=metadata)


def _header_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header (empty when it has none)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {path} as safetensors ({exc})") from exc


def header_backbone(path: str | Path) -> str:
    """The backbone a safetensors header names ("cogvideox" when it names none); its config is not read."""
    return _header_metadata(path).get(BACKBONE_KEY, "cogvideox")


def read_backbone(path: str | Path) -> tuple[str, ToraConfig | None]:
    """(backbone, config) named in a safetensors header; ("cogvideox", None) when the header names none."""
    metadata = _header_metadata(path)
    backbone = metadata.get(BACKBONE_KEY, "cogvideox")
    if backbone == "cogvideox":
        return backbone, None
    if CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path}: header names backbone {backbone!r} but carries no {CONFIG_KEY!r}")
    return backbone, header_config(metadata[CONFIG_KEY], path)


# What each ToraConfig field's annotation asks of a value read from JSON: (what is expected, its check)
_FIELD_TYPES: dict[str, Entry] = {
    "int": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a finite number", finite_number),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
}
# Fields a header may leave out, with the value files written before the field existed were trained with.
OPTIONAL_HEADER_FIELDS = {"flow_sigma": 10.0}
CONFIG_FIX = (
    "The file is damaged or was written by another program or version: download it again, or write it again with "
    "tora_model.st_dit.save_st_transformer (what `python -m tora_model train denoiser` does)."
)


def header_config(text: str, path: str | Path) -> ToraConfig:
    """The ToraConfig stored as JSON under `CONFIG_KEY` in the safetensors header of `path`: every field of
    ToraConfig, each of its type, no other key — but `OPTIONAL_HEADER_FIELDS`, which files written before them lack
    and which then take the value those files were trained with. Anything else is a CheckpointError naming the file,
    the fields that are unknown, missing or mistyped, and how to get a good file; nothing is dropped or guessed."""
    source = f"the {CONFIG_KEY!r} entry in the safetensors header of {path}"
    fields = parse_json_object(text, source, "the ToraConfig fields as a JSON object", CONFIG_FIX)
    entries = {f.name: _FIELD_TYPES[f.type] for f in dataclasses.fields(ToraConfig)}
    unknown = sorted(set(fields) - set(entries))
    wrong = [f"unknown fields {unknown}"] if unknown else []
    required = [name for name in entries if name not in OPTIONAL_HEADER_FIELDS]
    wrong += entry_problems(fields, entries, required=required)
    if wrong:
        raise CheckpointError(f"{source} is not a ToraConfig: {'; '.join(wrong)}. {CONFIG_FIX}")
    try:
        return ToraConfig(**{**OPTIONAL_HEADER_FIELDS, **fields})
    except ConfigError as err:
        raise CheckpointError(f"{source} is not a valid ToraConfig: {err}. {CONFIG_FIX}") from None


def load_st_transformer(
    path: str | Path, dtype: torch.dtype | None = None, device=None, config: ToraConfig | None = None
) -> STDiTTransformer:
    """Build the ST-DiT from its safetensors file (config from the header unless given); eval mode."""
    from safetensors.torch import load_file

    backbone, stored = read_backbone(path)
    config = config or stored
    if backbone != "st_dit" or config is None:
        raise CheckpointError(f"{path} is not an st_dit checkpoint (header backbone {backbone!r})")
    model = STDiTTransformer(config, device="meta")
    tensors = load_file(str(path), device=str(device or "cpu"))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path} does not fit the st_dit model of its header: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {mismatched[:5]}; the file is damaged or from another version"
        )
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()
