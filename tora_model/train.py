"""Train the tiny Tora on synthetic clips: `python -m tora_model.train vae|denoiser|all --seed 0 --minutes 10`.

Source: issue 7; Tora paper §4 (training: the trajectory extractor, fusers and DiT learn from flow videos encoded by
the ordinary VAE, image-to-video conditioning by the first frame); CogVideoX recipe for the denoiser (v-prediction,
zero-terminal-SNR scaled-linear schedule, `tora_model.schedule`). CPU-sized:

1. `vae`: the project's CogVideoX causal VAE at `VAE_CONFIG`, reconstruction (L1 weighted on saturated pixels + MSE) + a small KL, on random
   9-frame 32×48 crops (around the objects) of clips and of their flow videos (the same network encodes both at inference).
2. `denoiser`: the `tiny_st` spatial-temporal DiT with extractor and fusers. Per dataset the clip latents, the
   first-frame latents (frame 0 encoded alone, as `pipeline.encode_image_latents` does) and the flow-video latents
   (`Clip.flow_video`, the inference rendering) are encoded once; each step draws posterior samples (× 0.7), a
   timestep uniform in 0..999 and noise, and regresses v. Motion features are zeroed for 10 % of the samples so
   the same weights also run without a trajectory. `--resume` continues a denoiser from the weights in `--out`.

Deterministic for a seed on one thread (`torch.set_num_threads(1)`, which is also the fastest on a shared CPU).
Weights go to `models/tiny_tora/`: `transformer.safetensors` (st_dit header, `checkpoints.load_transformer`) and
`vae/` (a diffusers-style folder, `vae_loading.load_vae`).
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

from .config import ToraConfig
from .flow import flow_video_to_vae_input
from .schedule import full_sqrt_alphas_cumprod
from .st_dit import STDiTTransformer, save_st_transformer
from .synthetic import make_clips
from .vae import SCALE, CogVideoXVAE, DiagonalGaussian, VAEConfig, chunk_bounds
from .vae_loading import save_vae

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "tiny_tora"
VAE_CONFIG = VAEConfig(channels=8, channel_mult=(1, 1, 2, 2), layers_per_block=1, norm_groups=4)
PRESET = "tiny_st"
KL_WEIGHT = 5e-4
MOTION_DROP = 0.1


def clip_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] → [1, 3, F, H, W] in [-1, 1] (the scaling of both the start image and the flow video)."""
    return flow_video_to_vae_input(frames)


# ------------------------------------------------------------------------------------------------------------ VAE


def _running(start: float, budget_s: float, step: int, steps: int | None) -> bool:
    """Go on until `steps` steps when given (exact reproduction), else until the wall budget is spent."""
    return step < steps if steps is not None else time.monotonic() - start < budget_s


def vae_forward(
    vae: CogVideoXVAE, video: torch.Tensor, generator: torch.Generator, train_encoder: bool = True
) -> tuple[torch.Tensor, ...]:
    """Training pass: one-pass encode (as at inference), posterior sample, chunked decode (inference schedule)."""
    with torch.set_grad_enabled(train_encoder):
        moments, _ = vae.encode_chunk(video)  # [B, 32, T, h, w]
    posterior = DiagonalGaussian.from_moments(moments)
    z = posterior.sample(generator)  # [B, 16, T, h, w]
    cache, outs = None, []
    for start, end in chunk_bounds(z.shape[2], 2):
        out, cache = vae.decode_chunk(z[:, :, start:end], cache)
        outs.append(out)
    recon = torch.cat(outs, dim=2)  # [B, 3, F, H, W]
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


def vae_loss(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """L1 weighted up on saturated pixels (objects, flow colours) plus MSE; videos [B, 3, F, H, W] in [-1, 1]."""
    saturation = (video.amax(dim=1, keepdim=True) - video.amin(dim=1, keepdim=True)) / 2  # [B, 1, F, H, W]
    weight = 1 + 10 * saturation
    return (weight * (recon - video).abs()).mean() / weight.mean() + F.mse_loss(recon, video)


def train_vae(
    seed: int,
    minutes: float,
    num_clips: int = 400,
    batch: int = 4,
    init: CogVideoXVAE | None = None,
    steps: int | None = None,
    decoder_only: bool = False,
) -> CogVideoXVAE:
    """Train (or, with `init`, continue training) the VAE for `minutes` of wall time.

    decoder_only: keep the encoder — hence the latent space a denoiser was trained on — fixed and train the decoder.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    clips = make_clips(seed, num_clips)
    videos = [clip_pixels(c.frames) for c in clips] + [clip_pixels(c.flow_video()) for c in clips]
    centres = [c.centres for c in clips] * 2
    vae = (init or CogVideoXVAE(VAE_CONFIG)).train()
    vae.encoder.requires_grad_(not decoder_only)
    params = vae.decoder.parameters() if decoder_only else vae.parameters()
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    start, step = time.monotonic(), 0
    while _running(start, minutes * 60, step, steps):
        video = _vae_batch(videos, centres, rng, batch)
        recon, kl = vae_forward(vae, video, generator, train_encoder=not decoder_only)
        loss = vae_loss(recon, video) + KL_WEIGHT * kl
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
    log.info("vae: %d steps in %.1f min", step, (time.monotonic() - start) / 60)
    return vae.eval()


# ------------------------------------------------------------------------------------------------------- denoiser


@torch.no_grad()
def encode_dataset(vae: CogVideoXVAE, clips, batch: int = 16) -> dict[str, torch.Tensor]:
    """Posterior moments [N, 32, T, h, w] of the clips, their first frames (alone) and their flow videos.

    Batched: every norm in the encoder is per sample, so a batch encodes each clip exactly as alone.
    """
    parts: dict[str, list[torch.Tensor]] = {"clip": [], "first": [], "flow": []}
    for i in range(0, len(clips), batch):
        group = clips[i : i + batch]
        pixels = torch.cat([clip_pixels(c.frames) for c in group])  # [b, 3, F, H, W]
        flows = torch.cat([clip_pixels(c.flow_video()) for c in group])
        parts["clip"].append(vae.encode_chunk(pixels)[0])
        parts["first"].append(vae.encode_chunk(pixels[:, :, :1])[0])
        parts["flow"].append(vae.encode_chunk(flows)[0])
    return {k: torch.cat(v) for k, v in parts.items()}


def _sample_latents(moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Posterior sample × SCALE, frames first: [B, 32, T, h, w] moments → [B, T, 16, h, w]."""
    z = DiagonalGaussian.from_moments(moments).sample(generator) * SCALE
    return rearrange(z, "b c t h w -> b t c h w")


def denoiser_batch(data: dict[str, torch.Tensor], index: torch.Tensor, generator: torch.Generator):
    """(x0, image latents zero-padded to T, flow latents), each [B, T, 16, h, w]."""
    x0 = _sample_latents(data["clip"][index], generator)
    first = _sample_latents(data["first"][index], generator)  # [B, 1, 16, h, w]
    image = torch.cat([first, first.new_zeros(first.shape[0], x0.shape[1] - 1, *first.shape[2:])], dim=1)
    flow = _sample_latents(data["flow"][index], generator)
    return x0, image, flow


def v_loss(model: STDiTTransformer, batch, generator: torch.Generator) -> torch.Tensor:
    """v-prediction MSE at a uniform timestep on the zero-SNR schedule (x_t = a·x0 + s·ε, v = a·ε − s·x0)."""
    x0, image, flow = batch
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
    return F.mse_loss(v, target)


def train_denoiser(
    vae: CogVideoXVAE,
    seed: int,
    minutes: float,
    num_clips: int = 600,
    batch: int = 8,
    steps: int | None = None,
    init: STDiTTransformer | None = None,
    peak_lr: float = 1e-3,
) -> STDiTTransformer:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start = time.monotonic()
    data = encode_dataset(vae, make_clips(seed + 1, num_clips))
    log.info("encoded %d clips in %.1f min", num_clips, (time.monotonic() - start) / 60)
    model = (init or STDiTTransformer(ToraConfig.preset(PRESET))).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    budget, step, running = minutes * 60 - (time.monotonic() - start), 0, 0.0
    start = time.monotonic()
    while _running(start, budget, step, steps):
        progress = step / steps if steps is not None else (time.monotonic() - start) / budget
        lr_scale = min(1.0, (step + 1) / 200) * (0.5 + 0.5 * math.cos(math.pi * min(1.0, progress)))
        for group in optimizer.param_groups:
            group["lr"] = peak_lr * max(lr_scale, 0.05)  # warm-up, then cosine to 5 % over the budget
        index = torch.randint(0, num_clips, (batch,), generator=generator)
        loss = v_loss(model, denoiser_batch(data, index, generator), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for target, source in zip(ema.parameters(), model.parameters(), strict=True):
                target.lerp_(source, 1 - 0.995)
        step += 1
        running = 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0:
            log.info(
                "denoiser step %d  loss %.4f  (%.0f s)",
                step,
                running / (1 - 0.98**step),
                time.monotonic() - start,
            )
    log.info("denoiser: %d steps in %.1f min", step, (time.monotonic() - start) / 60)
    return ema


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tora_model.train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "stage",
        choices=("vae", "denoiser", "all", "decoder"),
        help="decoder: continue training only the VAE decoder (latents unchanged; may run beside `denoiser`)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--minutes", type=float, default=None, help="wall budget per stage (vae 10, denoiser 30)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--clips", type=int, default=600, help="denoiser dataset size")
    parser.add_argument(
        "--steps", type=int, default=None, help="exact step count instead of a wall budget (bit-reproducible)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the weights in --out")
    parser.add_argument("--lr", type=float, default=1e-3, help="denoiser peak learning rate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("vae", "all", "decoder"):
        init = None
        if args.resume or args.stage == "decoder":
            from .vae_loading import load_vae

            init = load_vae(args.out / "vae")
        vae = train_vae(
            args.seed, args.minutes or 10, init=init, steps=args.steps, decoder_only=args.stage == "decoder"
        )
        save_vae(vae, args.out / "vae")
        log.info("wrote %s", args.out / "vae")
    if args.stage in ("denoiser", "all"):
        from .vae_loading import load_vae

        vae = load_vae(args.out / "vae")
        init = None
        if args.resume:
            from .st_dit import load_st_transformer

            init = load_st_transformer(args.out / "transformer.safetensors")
        model = train_denoiser(
            vae,
            args.seed,
            args.minutes or 30,
            num_clips=args.clips,
            steps=args.steps,
            init=init,
            peak_lr=args.lr,
        )
        save_st_transformer(model, args.out / "transformer.safetensors")
        log.info("wrote %s", args.out / "transformer.safetensors")


if __name__ == "__main__":
    main()
