"""The whole Tora chain on the simulated GPU at the released size, one stage per ComfyUI node, measured.

Each stage holds on the device what its node holds and runs the pack's real code on fake `cuda` tensors:

  text encode   T5-XXL alone on the GPU, one 226-token prompt, then evicted (CLIPLoader / Tora Text Encode)
  motion        VAE + trajectory extractor: VAE encode of the flow video, then the 42 extractor features, which go
                back to the host (Trajectory To Motion Latent)
  sampler       the transformer's resident weights (fp8 and block swap applied as Load Tora Model does), `steps`
                denoising steps, CFG as two rows in one batch, motion on; for I2V the VAE encodes the start image
                first (Tora Sampler). This is the hot loop: host syncs and fp32 promotions are errors here.
  decode        VAE alone, tiled and untiled (Motion VAE Decode)

Weights come from `meta` modules given fake storage, so nothing is read from disk. Noise is drawn on a CPU generator
and moved, as the pipeline always does.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import T5Config, T5EncoderModel

from ..block_swap import pinned_reservation
from ..config import ToraConfig
from ..errors import ConfigError
from ..motion_guidance import MotionGuidance, encode_flow_video
from ..offload import enable_block_swap, move_resident, store_block_linears
from ..pipeline import LATENT_CHANNELS, decode_latents, encode_image_latents, latent_frames, sample_latents
from ..schedule import make_schedule
from ..st_dit import STDiTTransformer
from ..text import t5_xxl_config
from ..transformer import build_transformer
from ..vae import CogVideoXVAE, VAEConfig
from .accounting import DeviceMemory, StageRecord
from .fake_cuda import materialize, simulated_cuda

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.bfloat16}
STAGES = ("text", "motion", "sampler", "decode")
CUDA = torch.device("cuda", 0)
HOST = torch.device("cpu")


@dataclass(frozen=True)
class Setting:
    """One Load Tora Model setting and generation size to simulate."""

    variant: str = "t2v"  # "t2v" or "i2v"
    precision: str = "bf16"  # "bf16", "fp16" or "fp8_e4m3fn" (fp8 weight storage, bf16 compute)
    blocks_to_swap: int = 0  # last N transformer blocks kept on the host, visiting the GPU one at a time
    width: int = 720
    height: int = 480
    num_frames: int = 49
    steps: int = 2  # simulated denoising steps: the first (first-order) and a second-order one
    motion: bool = True

    def __post_init__(self) -> None:
        if self.variant not in ("t2v", "i2v"):
            raise ConfigError(f"variant must be 't2v' or 'i2v', got {self.variant!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")

    @property
    def compute_dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def describe(self) -> str:
        swap = f" + block swap {self.blocks_to_swap}" if self.blocks_to_swap else ""
        return f"{self.variant.upper()} {self.precision}{swap}, {self.width}x{self.height}x{self.num_frames}"


@dataclass(frozen=True)
class Models:
    """The configs to simulate: the released 5B by default, tiny configs in CI."""

    transformer: ToraConfig
    vae: VAEConfig = dataclasses.field(default_factory=VAEConfig)
    t5: T5Config = dataclasses.field(default_factory=t5_xxl_config)

    @classmethod
    def released(cls, variant: str) -> Models:
        return cls(ToraConfig.preset(f"cogvideox_5b_{variant}"))


@dataclass
class ChainResult:
    """Stage records of one simulated generation, plus what block swap moved and kept on the host."""

    setting: Setting
    stages: list[StageRecord]
    weight_bytes: dict[str, int]  # device bytes of each model's weights while its node runs
    host_model_bytes: int  # host bytes holding the transformer between nodes (block-swap masters included)
    host_to_device_per_step: int  # bytes copied to the GPU per denoising step (block swap, inputs)
    device_to_host_per_step: int
    pinned_bytes: int = 0  # page-locked host memory block swap takes on a real GPU (one allocation per block)
    # what pinning each tensor separately took (the block swap before issue 11)
    pinned_bytes_per_tensor: int = 0

    def stage(self, prefix: str) -> StageRecord:
        return next(s for s in self.stages if s.name.startswith(prefix))


def tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


@contextmanager
def _on_gpu(module: nn.Module, dtype: torch.dtype | None = None) -> Iterator[nn.Module]:
    """A meta-built module with fake weights on the GPU inside the block, freed after (ComfyUI evicting it)."""
    materialize(module, CUDA, dtype)
    try:
        yield module
    finally:
        materialize(module, "meta")
        gc.collect()


class _Chain:
    """One simulated generation; each method is one node's stage."""

    def __init__(self, setting: Setting, models: Models) -> None:
        """Builds the modules on meta; call before entering the simulated device (module init runs real code)."""
        self.setting, self.models = setting, models
        self.memory = DeviceMemory()
        self.generator = torch.Generator("cpu").manual_seed(0)
        self.weights: dict[str, int] = {}
        with torch.device("meta"):
            self.t5 = T5EncoderModel(models.t5).eval()
            self.vae = CogVideoXVAE(models.vae).eval()
        if models.transformer.backbone == "st_dit":
            self.model = STDiTTransformer(
                models.transformer, device="meta", dtype=setting.compute_dtype
            ).eval()
        else:
            self.model = build_transformer(models.transformer, device="meta", dtype=setting.compute_dtype)

    def name_modules(self) -> None:
        for module, name in ((self.t5, "t5"), (self.vae, "vae"), (self.model, "transformer")):
            self.memory.name_modules(module, name)

    def text(self) -> torch.Tensor:
        with self.memory.stage("text encode (T5-XXL alone, then evicted)"), _on_gpu(self.t5, torch.bfloat16):
            self.weights["t5"] = tensor_bytes(self.t5)
            ids = torch.zeros(1, self.models.transformer.max_text_len, dtype=torch.int64).to(CUDA)  # [1, 226]
            with torch.no_grad():
                embeds = self.t5(input_ids=ids).last_hidden_state  # [1, 226, 4096]
            return embeds.to(HOST)  # CONDITIONING lives on the host between nodes

    def load_model(self) -> list[nn.Module]:
        """Load Tora Model: host weights in the compute dtype, fp8 block linears, block swap hooks."""
        materialize(self.model, HOST, self.setting.compute_dtype)
        if self.setting.precision == "fp8_e4m3fn":
            store_block_linears(self.model.transformer_blocks, torch.float8_e4m3fn)
        if not self.setting.blocks_to_swap:
            return []
        return enable_block_swap(self.model.transformer_blocks, self.setting.blocks_to_swap, CUDA, HOST)

    def motion(self, encode: bool = True) -> MotionGuidance:
        """VAE + extractor on the GPU: flow video → motion latents → 42 features, kept on the host.

        encode=False skips the VAE (zero latents of the right shape): for re-simulating only the sampler.
        """
        s = self.setting
        extractor = self.model.traj_extractor
        with self.memory.stage("motion (VAE + extractor: flow encode, features)"):
            if encode:
                with _on_gpu(self.vae, s.compute_dtype):
                    flow_rgb = torch.zeros(
                        s.num_frames, s.height, s.width, 3, dtype=torch.uint8
                    )  # [F, H, W, 3]
                    latents = encode_flow_video(self.vae, flow_rgb, generator=self.generator, tiling=True)
            else:
                c = self.models.vae.spatial_compression
                latents = torch.zeros(
                    1, latent_frames(s.num_frames), LATENT_CHANNELS, s.height // c, s.width // c
                )
            self.weights["extractor"] = tensor_bytes(extractor)
            extractor.to(CUDA)
            with torch.no_grad():
                features = self.model.extract_motion(
                    latents.to(CUDA, s.compute_dtype)
                )  # 42 × [T, 128, h/2, w/2]
            extractor.to(HOST)
            features = tuple(f.to(HOST) for f in features)
        return MotionGuidance(features, s.num_frames, s.height, s.width)

    def sample(
        self, text: torch.Tensor, swapped: list[nn.Module], motion: MotionGuidance | None
    ) -> torch.Tensor:
        """Tora Sampler: resident weights (+ VAE for the I2V start image), the step loop, weights back to the host."""
        s = self.setting
        with self.memory.stage("sampler (transformer, CFG rows batched)") as record:
            move_resident(self.model, swapped, CUDA)
            self.weights["transformer"] = self.memory.live["cuda"] - record.start_bytes
            image_latents = None
            if s.variant == "i2v":
                with _on_gpu(self.vae, s.compute_dtype):
                    image = torch.zeros(s.height, s.width, 3)  # [H, W, 3] start image in [0, 1]
                    image_latents = encode_image_latents(
                        self.vae,
                        image,
                        width=s.width,
                        height=s.height,
                        num_frames=s.num_frames,
                        generator=self.generator,
                    )
            if motion is not None:  # once per run, not per step
                motion = dataclasses.replace(motion, features=tuple(f.to(CUDA) for f in motion.features))
            with self.memory.stage("denoising steps", hot=True):
                latents = sample_latents(
                    self.model,
                    text_embeds=text,
                    width=s.width,
                    height=s.height,
                    num_frames=s.num_frames,
                    steps=s.steps,
                    generator=self.generator,
                    motion=motion,
                    image_latents=image_latents,
                )
            del motion
            move_resident(self.model, swapped, HOST)
            gc.collect()
        return latents.to(HOST)

    def decode(self, latents: torch.Tensor) -> None:
        with _on_gpu(self.vae, self.setting.compute_dtype):
            self.weights["vae"] = tensor_bytes(self.vae)
            for tiled in (True, False):
                with self.memory.stage(f"decode ({'tiled' if tiled else 'untiled'}, VAE alone)"):
                    decode_latents(self.vae, latents, tiling=tiled)


def run_chain(
    setting: Setting, models: Models | None = None, stages: Collection[str] = STAGES
) -> ChainResult:
    """Simulate the stages of one generation (all by default); raises SimulatedGPUError on a device, dtype or sync
    mistake. Without "motion" the sampler still gets motion features, from the extractor alone."""
    models = models or Models.released(setting.variant)
    if models.transformer.is_i2v != (setting.variant == "i2v"):
        raise ConfigError(
            f"transformer config is {'I2V' if models.transformer.is_i2v else 'T2V'} but the setting is "
            f"{setting.variant}"
        )
    make_schedule(
        setting.steps, "sat"
    )  # host-side numbers, computed for real before tensors turn fake (cached)
    chain = _Chain(setting, models)
    with simulated_cuda(), chain.memory as memory:
        chain.name_modules()
        config = models.transformer
        text = chain.text() if "text" in stages else torch.zeros(1, config.max_text_len, config.text_dim)
        swapped = chain.load_model()
        host_model_bytes = memory.live["cpu"]
        motion = chain.motion(encode="motion" in stages) if setting.motion else None
        latents = chain.sample(text, swapped, motion)
        if "decode" in stages:
            chain.decode(latents)
        steps = next(r for r in memory.records if r.name == "denoising steps")
    return ChainResult(
        setting,
        memory.records,
        chain.weights,
        host_model_bytes,
        steps.host_to_device_bytes // setting.steps,
        steps.device_to_host_bytes // setting.steps,
        *pinned_host_bytes(swapped),
    )


def pinned_host_bytes(blocks: Sequence[nn.Module]) -> tuple[int, int]:
    """Page-locked host memory of block swap on a real GPU: one pinned buffer per block, each rounded up to a power
    of two by torch's host allocator; and, for comparison, pinning every tensor separately (each rounded up)."""
    per_block = sum(pinned_reservation(tensor_bytes(block)) for block in blocks)
    per_tensor = sum(
        pinned_reservation(t.numel() * t.element_size())
        for block in blocks
        for t in [*block.parameters(), *block.buffers()]
    )
    return per_block, per_tensor
