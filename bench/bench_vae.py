"""Benchmark: CogVideoX VAE decode, ours (chunked + tiled) vs diffusers AutoencoderKLCogVideoX with enable_tiling().

Both sides use the real 5B channel configuration and the same random weights (filled in place, in name order, from
one seeded generator; the state-dict names are identical), decode the same random latent, and run in their own
subprocess so that peak RSS is clean. Reported per side: wall time of the decode, ru_maxrss (whole process: import,
weights, decode) and the peak RSS of the decode alone (VmHWM reset through /proc/self/clear_refs just before it).

    python bench/bench_vae.py                      # latent 5×8×12 (17 frames of 64×96), ~1–2 min per run
    python bench/bench_vae.py --latent 3x16x24 --tile 12x15 --overlap 2x3

Both sides tile with the same tile size; ours is given diffusers' overlap. Tile heights must be multiples of 6 and
widths multiples of 5 latents, otherwise diffusers' crop arithmetic (overlap factors 1/6, 1/5) returns a video of
the wrong size. The sides alternate (`--rounds`) and the fastest run / highest memory of each side is reported,
because the CPU is shared.

Targets: peak RSS ≤ 0.8× and time ≤ 1.0× the reference.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def _say(text: str) -> None:
    print(text)  # noqa: T201 — a benchmark reports on stdout


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def _fill_random(model: torch.nn.Module, seed: int) -> None:
    """Same weights on both sides: every tensor random, convolutions scaled by 1/sqrt(fan-in), norm scales ≈ 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in sorted(model.state_dict().items()):
            noise = torch.randn(value.shape, generator=g)
            if value.ndim > 1:
                value.copy_(noise / math.sqrt(value[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                value.copy_(1 + 0.2 * noise)
            else:
                value.copy_(0.1 * noise)


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _build(side: str, args: argparse.Namespace):
    if side == "ours":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tora_model.vae import CogVideoXVAE, Tiling, VAEConfig

        model = CogVideoXVAE(VAEConfig.preset("cogvideox_5b")).eval()
        tiling = Tiling(*args.tile, *args.overlap) if args.tile else None
        return model, lambda z: model.decode(z, latents_per_chunk=2, tiling=tiling)
    from diffusers import AutoencoderKLCogVideoX

    model = AutoencoderKLCogVideoX(scaling_factor=0.7).eval()
    if args.tile:  # same tile size as ours; diffusers derives its overlap from fixed factors
        model.enable_tiling(tile_sample_min_height=8 * args.tile[0], tile_sample_min_width=8 * args.tile[1])
    else:
        model.enable_tiling()
    return model, lambda z: model.decode(z).sample


def worker(side: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model, decode = _build(side, args)
    _fill_random(model, seed=0)
    z = torch.randn(1, 16, *args.latent, generator=torch.Generator().manual_seed(1))  # [1, 16, T, h, w]
    rss_before = _hwm_mb() if _reset_hwm() else float("nan")
    times, cpu_times = [], []
    with torch.no_grad():
        for _ in range(args.repeat):  # the CPU is shared: keep the fastest run
            start, cpu_start = time.perf_counter(), time.process_time()
            video = decode(z)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            del video
        video = decode(z[:, :, :1])
    result = {
        "side": side,
        "seconds": min(times),
        "all_seconds": times,
        "cpu_seconds": min(cpu_times),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_decode_mb": rss_before,
        "decode_peak_mb": _hwm_mb(),
        "first_frame_mean_abs": float(video.double().abs().mean()),
    }
    _say(json.dumps(result))


def _run_worker(side: str, args: argparse.Namespace) -> dict:
    dims = {"latent": args.latent, "tile": args.tile or (0,), "overlap": args.overlap}
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--threads",
        str(args.threads),
        "--repeat",
        str(args.repeat),
    ]
    for flag, value in dims.items():
        cmd += [f"--{flag}", "x".join(map(str, value))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _summary(runs: list[dict]) -> dict:
    """Fastest times, highest memory over the rounds of one side."""
    best = {key: min(r[key] for r in runs) for key in ("seconds", "cpu_seconds")}
    worst = {key: max(r[key] for r in runs) for key in ("ru_maxrss_mb", "decode_peak_mb")}
    return {**best, **worst, "rss_before_decode_mb": min(r["rss_before_decode_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latent", type=_dims, default=(5, 8, 12), help="T x h x w latent size")
    parser.add_argument("--tile", type=_dims, default=(6, 10), help="tile h x w in latents (0 = untiled)")
    parser.add_argument("--overlap", type=_dims, default=(1, 2), help="tile overlap h x w in latents (ours)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="decodes per worker; the fastest counts")
    parser.add_argument("--rounds", type=int, default=2, help="workers per side, alternating sides")
    parser.add_argument("--worker", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tile == (0,):
        args.tile = None
    if args.worker:
        worker(args.worker, args)
        return
    runs: dict[str, list[dict]] = {"diffusers": [], "ours": []}
    for _ in range(args.rounds):  # alternate the sides so that load from other processes hits both alike
        for side in runs:
            runs[side].append(_run_worker(side, args))
            r = runs[side][-1]
            _say(
                f"{side:9s} decode {r['seconds']:6.1f} s wall {r['cpu_seconds']:6.1f} s CPU   "
                f"ru_maxrss {r['ru_maxrss_mb']:5.0f} MB   before decode {r['rss_before_decode_mb']:5.0f} MB   "
                f"decode peak {r['decode_peak_mb']:5.0f} MB"
            )
    results = {side: _summary(rs) for side, rs in runs.items()}
    ours, ref = results["ours"], results["diffusers"]
    _say(
        f"latent {args.latent}, tile {args.tile}, overlap {args.overlap}, threads {args.threads}, best of {args.rounds}"
    )
    _say(f"time ratio ours/diffusers       {ours['seconds'] / ref['seconds']:.2f}  (target ≤ 1.0)")
    _say(f"CPU-time ratio ours/diffusers   {ours['cpu_seconds'] / ref['cpu_seconds']:.2f}")
    _say(f"ru_maxrss ratio ours/diffusers  {ours['ru_maxrss_mb'] / ref['ru_maxrss_mb']:.2f}  (target ≤ 0.8)")
    grow = [r["decode_peak_mb"] - r["rss_before_decode_mb"] for r in (ours, ref)]
    _say(f"decode-only growth ratio        {grow[0] / grow[1]:.2f}  ({grow[0]:.0f} MB vs {grow[1]:.0f} MB)")


if __name__ == "__main__":
    main()
