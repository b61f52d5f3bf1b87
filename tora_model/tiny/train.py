"""Train the tiny Tora on synthetic clips: `python -m tora_model.tiny.train vae|decoder|denoiser|all --seed 0`.

Source: issue 7; Tora paper §4 (training: the trajectory extractor, fusers and DiT learn from flow videos encoded by
the ordinary VAE, image-to-video conditioning by the first frame); CogVideoX recipe for the denoiser (v-prediction,
zero-terminal-SNR scaled-linear schedule, `tora_model.schedule`). CPU-sized, three stages:

1. `vae`: the project's CogVideoX causal VAE at `VAE_CONFIG` (×4 in space, ×4 in time), reconstruction (L1 weighted
   on saturated pixels + MSE) + a small KL, on random 9-frame 32×48 crops (around the objects) of clips and of their
   flow videos (the same network encodes both at inference).
2. `decoder`: the decoder alone (encoder, hence latents, fixed) with a cosine learning rate and noise-augmented
   latents, so it draws clean objects from sampled latents.
3. `denoiser`: the `tiny_st` spatial-temporal DiT with extractor and fusers. Per dataset the clip latents, the
   first-frame latents (frame 0 encoded alone, as `pipeline.encode_image_latents` does) and the flow-video latents
   (`Clip.flow_video`, the inference rendering) are encoded once; each step draws posterior samples (× 0.7), a
   timestep uniform in 0..999 and noise, and regresses v. Motion features are zeroed for 10 % of the samples so
   the same weights also run without a trajectory; `--object-weight` weights the loss up on the latent cells the
   objects cover (`object_cells`). `--resume` continues a denoiser from the weights in `--out`.

Deterministic for a seed on one thread (`torch.set_num_threads(1)`, which is also the fastest on a shared CPU); the
step counts follow the wall budgets unless `--steps` fixes them. Weights go to `models/tiny_tora/`:
`transformer.safetensors` (st_dit header, `checkpoints.load_transformer`) and `vae/` (a diffusers-style folder,
`vae_loading.load_vae`).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..cli_args import non_negative_float, positive_float
from ..config import ToraConfig
from ..flow import SIGMA, flow_video_to_vae_input
from ..schedule import full_sqrt_alphas_cumprod
from ..st_dit import STDiTTransformer, load_st_transformer, save_st_transformer
from ..vae import SCALE, CogVideoXVAE, DiagonalGaussian, VAEConfig, chunk_bounds
from ..vae_loading import load_vae, save_vae
from .path_families import check_families
from .synthetic import make_clips

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "models" / "tiny_tora"
# ×4 in space (not CogVideoX's ×8): at 96×64 a ×8 latent cell is as large as the objects, and a VAE this small then
# loses them in generated frames (measured with the ×8 config of the first release: 12.6 px mean error).
VAE_CONFIG = VAEConfig(channels=16, channel_mult=(1, 1, 2), layers_per_block=1, norm_groups=4)
PRESET = "tiny_st"
KL_WEIGHT = 5e-4
VAE_LR = 2e-3  # the VAE stage from scratch; decoder and denoiser default to DEFAULT_LR
DEFAULT_LR = 1e-3
MOTION_DROP = 0.1
# object_cells: saturation (max − min of RGB, 0..255) from which a pixel starts to count as object; full at twice it.
# The objects' palette colours are ≥ 150 even in their texture's dark stripes, the backgrounds ≤ ~30.
OBJECT_SATURATION = 40.0
# decoder stage: latents get up to this × their std of extra noise (robust to sampled latents)
DECODER_NOISE = 0.1


def clip_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] → [1, 3, F, H, W] in [-1, 1] (the scaling of both the start image and the flow video)."""
    return flow_video_to_vae_input(frames)


# ------------------------------------------------------------------------------------------------------------ VAE


def _running(start: float, budget_s: float, step: int, steps: int | None) -> bool:
    """Go on until `steps` steps when given (exact reproduction), else until the wall budget is spent."""
    return step < steps if steps is not None else time.monotonic() - start < budget_s


def _progress(start: float, budget_s: float, step: int, steps: int | None) -> float:
    """Fraction of the run done (steps when given, else wall time), for learning-rate schedules."""
    return step / steps if steps is not None else (time.monotonic() - start) / budget_s


class _LossLog:
    """A stage's loss as a bias-corrected exponential running mean, logged every 100 steps."""

    def __init__(self, stage: str, start: float) -> None:
        self.stage, self.start, self.mean = stage, start, 0.0

    def add(self, step: int, loss: torch.Tensor) -> None:
        """Record the loss of step number `step` (counted from 1)."""
        self.mean = 0.98 * self.mean + 0.02 * loss.item()
        if step % 100 == 0:
            smoothed = self.mean / (1 - 0.98**step)
            log.info(
                "%s step %d  loss %.4f  (%.0f s)", self.stage, step, smoothed, time.monotonic() - self.start
            )


def _log_finished(stage: str, step: int, start: float) -> None:
    minutes = (time.monotonic() - start) / 60
    # the whole process so far (data, encoding, training): the CPU time the README records
    cpu = time.process_time() / 60
    log.info("%s: %d steps in %.1f min of wall time; process CPU time %.1f min", stage, step, minutes, cpu)


def decode_with_grad(vae: CogVideoXVAE, z: torch.Tensor) -> torch.Tensor:
    """Latents [B, 16, T, h, w] → video [B, 3, F, H, W] in the inference chunks with the causal cache, keeping the
    autograd graph (`CogVideoXVAE.decode` runs without gradients)."""
    cache, outs = None, []
    for first, last in chunk_bounds(z.shape[2], 2):
        out, cache = vae.decode_chunk(z[:, :, first:last], cache)
        outs.append(out)
    return torch.cat(outs, dim=2)


def vae_forward(
    vae: CogVideoXVAE, video: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Training pass: one-pass encode (as at inference), posterior sample, chunked decode (inference schedule)."""
    moments, _ = vae.encode_chunk(video)  # [B, 32, T, h, w]
    posterior = DiagonalGaussian.from_moments(moments)
    z = posterior.sample(generator)  # [B, 16, T, h, w]
    recon = decode_with_grad(vae, z)  # [B, 3, F, H, W]
    kl = 0.5 * (posterior.mean.square() + posterior.logvar.exp() - 1 - posterior.logvar).mean()
    return recon, kl


def _vae_batch(
    videos: list[torch.Tensor], centres: list[np.ndarray], rng: np.random.Generator, batch: int
) -> torch.Tensor:
    """Random 9-frame 32×48 crops [B, 3, 9, 32, 48] around a random object (the objects are a small part of a
    frame; centring the crops on them keeps every batch about what the tracker and the denoiser need)."""
    crops = []
    for _ in range(batch):
        i = int(rng.integers(len(videos)))
        video, centre = videos[i], centres[i]  # [1, 3, F, H, W], [N, F, 2]
        f0 = int(rng.integers(0, video.shape[2] - 8))
        x, y = centre[int(rng.integers(len(centre))), f0 + 4] + rng.uniform(-12, 12, size=2)
        y0 = int(np.clip(round(y) - 16, 0, video.shape[3] - 32))
        x0 = int(np.clip(round(x) - 24, 0, video.shape[4] - 48))
        crops.append(video[:, :, f0 : f0 + 9, y0 : y0 + 32, x0 : x0 + 48])
    return torch.cat(crops)


def _saturation(video: torch.Tensor) -> torch.Tensor:
    """(max − min) over RGB, halved: [B, 3, F, H, W] in [-1, 1] → [B, 1, F, H, W] in [0, 1]."""
    return (video.amax(dim=1, keepdim=True) - video.amin(dim=1, keepdim=True)) / 2


def vae_loss(recon: torch.Tensor, video: torch.Tensor, ghost_weight: float = 0.0) -> torch.Tensor:
    """L1 weighted up on saturated pixels (objects, flow colours) plus MSE; videos [B, 3, F, H, W] in [-1, 1].

    `ghost_weight` > 0 also weights up pixels the reconstruction colours (its saturation, without gradient): a
    trail or ghost of colour where the clip has background pulls the tracker's centroid as much as a missing part of
    the object does, and with the clip's saturation alone such a pixel counts no more than any background pixel.
    """
    weight = 1 + 10 * _saturation(video)
    if ghost_weight > 0:
        weight = weight + ghost_weight * _saturation(recon.detach())
    return (weight * (recon - video).abs()).mean() / weight.mean() + F.mse_loss(recon, video)


def _set_cosine_lr(optimizer: torch.optim.Optimizer, peak_lr: float, step: int, progress: float) -> None:
    """Warm up over 50 steps, then follow a cosine from `peak_lr` to 2 % of it over the run."""
    cosine = 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    for group in optimizer.param_groups:
        group["lr"] = peak_lr * min(1.0, (step + 1) / 50) * cosine


def _vae_data(
    seed: int, num_clips: int, families: tuple[str, ...] | None = None, flow_videos: bool = True
) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """Clips (of `families`, see `synthetic.make_clips`) and, with `flow_videos`, their flow videos as [1, 3, F, H,
    W] in [-1, 1] (the same encoder reads both at inference; the decoder only ever decodes clips)."""
    clips = make_clips(seed, num_clips, families=families)
    videos = [clip_pixels(c.frames) for c in clips]
    if not flow_videos:
        return videos, [c.centres for c in clips]
    return videos + [clip_pixels(c.flow_video()) for c in clips], [c.centres for c in clips] * 2


def train_vae(
    seed: int,
    minutes: float,
    num_clips: int = 400,
    batch: int = 4,
    init: CogVideoXVAE | None = None,
    steps: int | None = None,
    families: tuple[str, ...] | None = None,
    peak_lr: float = VAE_LR,
    ghost_weight: float = 0.0,
) -> CogVideoXVAE:
    """Train the whole VAE for `minutes` of wall time: from scratch at a constant rate, or, with `init`, continue
    training it (encoder too, so the latent space moves: retrain the denoiser after) with a 50-step warm-up and a
    cosine to 2 % of `peak_lr`. `ghost_weight`: see `vae_loss`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    videos, centres = _vae_data(seed, num_clips, families)
    vae = (init or CogVideoXVAE(VAE_CONFIG)).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=peak_lr, weight_decay=0.0)
    start, step = time.monotonic(), 0
    while _running(start, minutes * 60, step, steps):
        if init is not None:
            _set_cosine_lr(optimizer, peak_lr, step, _progress(start, minutes * 60, step, steps))
        video = _vae_batch(videos, centres, rng, batch)
        recon, kl = vae_forward(vae, video, generator)
        loss = vae_loss(recon, video, ghost_weight) + KL_WEIGHT * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            log.info(
                "vae step %d  loss %.5f  kl %.3f  (%.0f s)",
                step,
                loss.item(),
                kl.item(),
                time.monotonic() - start,
            )
    _log_finished("vae", step, start)
    return vae.eval()


def train_decoder(
    vae: CogVideoXVAE,
    seed: int,
    minutes: float,
    num_clips: int = 400,
    batch: int = 4,
    steps: int | None = None,
    peak_lr: float = DEFAULT_LR,
    families: tuple[str, ...] | None = None,
    ghost_weight: float = 0.0,
    flow_videos: bool = True,
) -> CogVideoXVAE:
    """Continue training only the decoder: the encoder — hence the latent space a denoiser learns — stays fixed.

    The learning rate warms up over 50 steps and then follows a cosine to 2 % over the budget; each latent sample gets
    extra Gaussian noise of a random amplitude up to DECODER_NOISE × the batch's latent std, so the decoder also
    draws clean objects from the slightly-off latents a sampler produces. `flow_videos`: also train on the clips'
    flow videos, as the VAE stage does (False: the clips alone; inference never decodes a flow video).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    vae.train()
    vae.encoder.requires_grad_(False)
    videos, centres = _vae_data(seed, num_clips, families, flow_videos)
    optimizer = torch.optim.AdamW(vae.decoder.parameters(), lr=peak_lr, weight_decay=0.0)
    start, step = time.monotonic(), 0
    budget, losses = minutes * 60, _LossLog("decoder", start)
    while _running(start, budget, step, steps):
        _set_cosine_lr(optimizer, peak_lr, step, _progress(start, budget, step, steps))
        video = _vae_batch(videos, centres, rng, batch)
        with torch.no_grad():
            moments, _ = vae.encode_chunk(video)  # [B, 32, T, h, w]
            z = DiagonalGaussian.from_moments(moments).sample(generator)  # [B, 16, T, h, w]
            amplitude = torch.rand(z.shape[0], 1, 1, 1, 1, generator=generator) * DECODER_NOISE * z.std()
            z = z + amplitude * torch.randn(z.shape, generator=generator)
        loss = vae_loss(decode_with_grad(vae, z), video, ghost_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses.add(step, loss)
    _log_finished("decoder", step, start)
    return vae.eval()


# ------------------------------------------------------------------------------------------------------- denoiser


def object_cells(frames: np.ndarray, spatial: int = 4, temporal: int = 4) -> torch.Tensor:
    """Where a clip's objects are, per latent cell: uint8 frames [F, H, W, 3] → float [T, H/spatial, W/spatial].

    1 where a saturated (object) pixel falls in the cell's frames — latent 0 is frame 0, latent t ≥ 1 frames
    temporal·(t−1)+1 .. temporal·t, the causal VAE's grouping — 0 on the low-saturation background, a ramp between;
    then widened by one cell, so the cells an object enters or leaves (its trails) count too.
    """
    if (len(frames) - 1) % temporal or frames.shape[1] % spatial or frames.shape[2] % spatial:
        raise ValueError(
            f"object_cells: expected 1 + {temporal}·k frames (the causal VAE's grouping) of a height and width "
            f"divisible by {spatial}, got {len(frames)} frames of {frames.shape[1]}×{frames.shape[2]}"
        )
    pixels = torch.from_numpy(frames).float()  # [F, H, W, 3]
    saturation = pixels.amax(-1) - pixels.amin(-1)  # [F, H, W], 0..255
    mask = ((saturation - OBJECT_SATURATION) / OBJECT_SATURATION).clamp(0, 1)
    first, rest = mask[:1], mask[1:]  # [1, H, W], [F-1, H, W]
    groups = rest.view(-1, temporal, *rest.shape[1:]).amax(1)  # [T-1, H, W]
    mask = torch.cat([first, groups])[:, None]  # [T, 1, H, W]
    cells = F.max_pool2d(mask, spatial)  # [T, 1, h, w]
    return F.max_pool2d(cells, 3, stride=1, padding=1)[:, 0]  # [T, h, w]


@torch.no_grad()
def encode_dataset(
    vae: CogVideoXVAE, clips, batch: int = 16, flow_sigma: float = SIGMA, dense_flow: bool = False
) -> dict[str, torch.Tensor]:
    """Posterior moments [N, 32, T, h, w] of the clips, their first frames (alone) and their flow videos (spread
    with `flow_sigma`, the model's `ToraConfig.flow_sigma`; with `dense_flow` the clips' dense object flow,
    `Clip.dense_flow_video`, instead), and the clips' `object_cells` [N, T, h, w].

    Batched: every norm in the encoder is per sample, so a batch encodes each clip exactly as alone.
    """
    parts: dict[str, list[torch.Tensor]] = {"clip": [], "first": [], "flow": []}
    for i in range(0, len(clips), batch):
        group = clips[i : i + batch]
        pixels = torch.cat([clip_pixels(c.frames) for c in group])  # [b, 3, F, H, W]
        flows = torch.cat(
            [clip_pixels(c.dense_flow_video() if dense_flow else c.flow_video(flow_sigma)) for c in group]
        )
        parts["clip"].append(vae.encode_chunk(pixels)[0])
        parts["first"].append(vae.encode_chunk(pixels[:, :, :1])[0])
        parts["flow"].append(vae.encode_chunk(flows)[0])
    data = {k: torch.cat(v) for k, v in parts.items()}
    data["objects"] = torch.stack([object_cells(c.frames) for c in clips])
    return data


def _sample_latents(moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Posterior sample × SCALE, frames first: [B, 32, T, h, w] moments → [B, T, 16, h, w]."""
    z = DiagonalGaussian.from_moments(moments).sample(generator) * SCALE
    return rearrange(z, "b c t h w -> b t c h w")


def denoiser_batch(data: dict[str, torch.Tensor], index: torch.Tensor, generator: torch.Generator):
    """(x0, image latents zero-padded to T, flow latents), each [B, T, 16, h, w], and object cells [B, T, 1, h, w]."""
    x0 = _sample_latents(data["clip"][index], generator)
    first = _sample_latents(data["first"][index], generator)  # [B, 1, 16, h, w]
    image = torch.cat([first, first.new_zeros(first.shape[0], x0.shape[1] - 1, *first.shape[2:])], dim=1)
    flow = _sample_latents(data["flow"][index], generator)
    return x0, image, flow, data["objects"][index][:, :, None]


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of weight · squared error over the mean weight (the weight broadcasts); a constant weight is plain MSE."""
    weight = weight.expand_as(target)
    return (weight * (prediction - target).square()).mean() / weight.mean()


def v_loss(
    model: STDiTTransformer, batch, generator: torch.Generator, object_weight: float = 0.0
) -> torch.Tensor:
    """v-prediction MSE at a uniform timestep on the zero-SNR schedule (x_t = a·x0 + s·ε, v = a·ε − s·x0).

    `object_weight` > 0 weights the error up by that much on the latent cells the objects cover (`object_cells`):
    the background is the first frame again and cheap to get right, while following the path is decided on a few
    cells per frame. 0 (default) is the loss of every stage before it.
    """
    x0, image, flow, objects = batch
    size = x0.shape[0]
    timestep = torch.randint(0, 1000, (size,), generator=generator)
    a = full_sqrt_alphas_cumprod(torch.float32)[timestep].view(size, 1, 1, 1, 1)
    s = (1 - a.square()).sqrt()
    noise = torch.randn(x0.shape, generator=generator)
    x_t = a * x0 + s * noise
    target = a * noise - s * x0
    features = model.extract_motion(flow)  # num_layers × [(B·T), C_m, h/2, w/2]
    # Dropped samples get zero features (the shipped weights were trained so). Inference without a trajectory passes
    # None instead, which also skips the fusers' biases; dropping whole batches as None was tried in a 12-min
    # fine-tune and did not lower the motion-on error.
    keep = (torch.rand(size, generator=generator) >= MOTION_DROP).to(x0.dtype)
    keep_rows = keep.repeat_interleave(x0.shape[1]).view(-1, 1, 1, 1)  # one flag per (B·T) feature row
    features = [f * keep_rows for f in features]
    text = x0.new_zeros(size, 1, model.config.text_dim)
    v = model(x_t, timestep, text, motion_features=features, image_latents=image)
    if object_weight > 0:
        return weighted_mse(v, target, 1 + object_weight * objects)
    return F.mse_loss(v, target)


def train_denoiser(
    vae: CogVideoXVAE,
    seed: int,
    minutes: float,
    num_clips: int = 600,
    batch: int = 8,
    steps: int | None = None,
    init: STDiTTransformer | None = None,
    peak_lr: float = DEFAULT_LR,
    families: tuple[str, ...] | None = None,
    object_weight: float = 0.0,
    flow_sigma: float | None = None,
    dense_flow: bool = False,
) -> STDiTTransformer:
    """`flow_sigma`: the flow videos' spreading, stored in the model's config; None keeps `init`'s (or the preset's).
    `dense_flow`: condition on the clips' dense object flow instead of their paths' flow (the Tora paper's first
    stage; inference always renders paths, so a later stage without it must follow)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start = time.monotonic()
    model = (init or STDiTTransformer(ToraConfig.preset(PRESET))).train()
    if flow_sigma is not None:
        model.config = model.config.replace(flow_sigma=flow_sigma)
    clips = make_clips(seed + 1, num_clips, families=families)
    data = encode_dataset(vae, clips, flow_sigma=model.config.flow_sigma, dense_flow=dense_flow)
    log.info(
        "encoded %d clips (%s) in %.1f min",
        num_clips,
        "dense object flow" if dense_flow else f"flow sigma {model.config.flow_sigma:g} px",
        (time.monotonic() - start) / 60,
    )
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.0)
    budget, step = minutes * 60 - (time.monotonic() - start), 0
    start = time.monotonic()
    losses = _LossLog("denoiser", start)
    while _running(start, budget, step, steps):
        progress = _progress(start, budget, step, steps)
        lr_scale = min(1.0, (step + 1) / 200) * (0.5 + 0.5 * math.cos(math.pi * min(1.0, progress)))
        for group in optimizer.param_groups:
            group["lr"] = peak_lr * max(lr_scale, 0.05)  # warm-up, then cosine to 5 % over the budget
        index = torch.randint(0, num_clips, (batch,), generator=generator)
        loss = v_loss(model, denoiser_batch(data, index, generator), generator, object_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for target, source in zip(ema.parameters(), model.parameters(), strict=True):
                target.lerp_(source, 1 - 0.995)
        step += 1
        losses.add(step, loss)
    _log_finished("denoiser", step, start)
    return ema


MINUTES = {"vae": 14.0, "decoder": 25.0, "denoiser": 45.0}  # the shipped run's wall budgets
# `all`: the decoder stage draws other clips than the VAE (seed) and denoiser (seed + 1)
DECODER_SEED_OFFSET = 3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tora_model.tiny.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "stage",
        choices=("vae", "decoder", "denoiser", "all"),
        help="vae: encoder + decoder from scratch (or --resume); decoder: only the decoder of the VAE in --out "
        "(latents unchanged, so it may run beside `denoiser`); denoiser: the ST-DiT on the VAE in --out; all: the "
        "three in order",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--minutes", type=float, default=None, help=f"wall budget per stage (default {MINUTES})"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--clips", type=int, default=600, help="denoiser dataset size")
    parser.add_argument(
        "--steps", type=int, default=None, help="exact step count instead of a wall budget (bit-reproducible)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the weights in --out")
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help=f"peak learning rate (default {VAE_LR} for vae, constant from scratch, cosine with --resume; "
        f"{DEFAULT_LR} for decoder and denoiser)",
    )
    parser.add_argument(
        "--families",
        default="curves",
        help="path families of the training clips, comma-separated or all (tora_model.tiny.path_families; 1–3 objects "
        "per clip, crossing when the list has more than curves); default curves, the original clips",
    )
    parser.add_argument(
        "--ghost-weight",
        type=non_negative_float,
        default=0.0,
        help="vae/decoder: also weight the loss up where the reconstruction has colour the clip lacks (trails of "
        "fast objects); 0 (default) is the loss of the stages before issue 12's second round",
    )
    parser.add_argument(
        "--object-weight",
        type=non_negative_float,
        default=0.0,
        help="denoiser: weight the loss up by this much on the latent cells the objects cover (see v_loss); 0 "
        "(default) is the loss of the stages before issue 12's fifth round",
    )
    parser.add_argument(
        "--flow-sigma",
        type=positive_float,
        default=None,
        help="denoiser: σ in pixels of the Gaussian that spreads the paths into the flow video, stored in the "
        "weights' config (ToraConfig.flow_sigma) so inference spreads the same; default: keep the resumed weights' "
        "(10, the release's, from scratch)",
    )
    parser.add_argument(
        "--no-flow-videos",
        action="store_true",
        help="decoder: train on the clips alone, not also on their flow videos (the decoder never decodes a flow "
        "video at inference; the fixed encoder still reads them); default trains on both, as before issue 12's "
        "ninth round",
    )
    parser.add_argument(
        "--dense-flow",
        action="store_true",
        help="denoiser: condition on the clips' dense object flow (every object pixel carries its move) instead of "
        "their paths' Gaussian flow — the Tora paper's first stage; follow it with a stage without, as inference "
        "renders paths",
    )
    args = parser.parse_args(argv)
    if args.dense_flow and args.stage != "denoiser":
        parser.error(f"--dense-flow applies to the denoiser stage only, not to {args.stage!r}")
    if args.no_flow_videos and args.stage != "decoder":
        parser.error(f"--no-flow-videos applies to the decoder stage only, not to {args.stage!r}")
    families = check_families(args.families)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    vae_folder, transformer_file = args.out / "vae", args.out / "transformer.safetensors"

    def budget(stage: str) -> float:
        return args.minutes or MINUTES[stage]

    if args.stage in ("vae", "all"):
        init = load_vae(vae_folder) if args.resume else None
        vae = train_vae(
            args.seed,
            budget("vae"),
            init=init,
            steps=args.steps,
            families=families,
            peak_lr=args.lr or VAE_LR,
            ghost_weight=args.ghost_weight,
        )
        save_vae(vae, vae_folder)
        log.info("wrote %s", vae_folder)
    if args.stage in ("decoder", "all"):
        seed = args.seed + DECODER_SEED_OFFSET if args.stage == "all" else args.seed
        vae = train_decoder(
            load_vae(vae_folder),
            seed,
            budget("decoder"),
            steps=args.steps,
            peak_lr=args.lr or DEFAULT_LR,
            families=families,
            ghost_weight=args.ghost_weight,
            flow_videos=not args.no_flow_videos,
        )
        save_vae(vae, vae_folder)
        log.info("wrote %s", vae_folder)
    if args.stage in ("denoiser", "all"):
        init = load_st_transformer(transformer_file) if args.resume else None
        model = train_denoiser(
            load_vae(vae_folder),
            args.seed,
            budget("denoiser"),
            num_clips=args.clips,
            steps=args.steps,
            init=init,
            peak_lr=args.lr or DEFAULT_LR,
            families=families,
            object_weight=args.object_weight,
            flow_sigma=args.flow_sigma,
            dense_flow=args.dense_flow,
        )
        save_st_transformer(model, transformer_file)
        log.info("wrote %s", transformer_file)


if __name__ == "__main__":
    main()
