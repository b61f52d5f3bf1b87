"""Sampler overhead per step at the release latent size, against diffusers' CogVideoXDPMScheduler in the same run.

The network is replaced by a constant v, so only the loop's own work is timed (CFG combine, x0, the DPM update and
its noise draws): 50 steps on [1, 13, 16, 60, 90] latents with batched CFG. Run: python bench/bench_step.py
"""

import math
import sys
import time
from pathlib import Path

import torch
from diffusers.schedulers import CogVideoXDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from tora_model.sampling import sample  # noqa: E402
from tora_model.schedule import DIFFUSERS_SCHEDULER_CONFIG  # noqa: E402

SHAPE = (1, 13, 16, 60, 90)  # [B, T, C, h, w] for 49 frames at 720x480
STEPS = 50
REPEATS = 2


def ours(noise, v, cond):
    sample(
        lambda x, t, c, step: v,
        noise,
        cond=cond,
        uncond=torch.zeros_like(cond),
        steps=STEPS,
        generator=torch.Generator().manual_seed(0),
    )


def reference(noise, v, cond):
    scheduler = CogVideoXDPMScheduler(**DIFFUSERS_SCHEDULER_CONFIG)
    scheduler.set_timesteps(STEPS)
    gen = torch.Generator().manual_seed(0)
    x, old = noise, None
    for i, t in enumerate(scheduler.timesteps):
        v_uncond, v_cond = v.chunk(2)
        weight = 1 + 6.0 * (1 - math.cos(math.pi * ((STEPS - t.item()) / STEPS) ** 5.0)) / 2
        guided = v_uncond + weight * (v_cond - v_uncond)
        back = scheduler.timesteps[i - 1] if i > 0 else None
        x, old = scheduler.step(guided, old, t, back, x, generator=gen, return_dict=False)


def best_time(fn, *args):
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    v = torch.randn((2, *SHAPE[1:]), generator=torch.Generator().manual_seed(2))
    cond = torch.zeros(1, 226, 64)
    with torch.no_grad():
        mine = best_time(ours, noise, v, cond)
        theirs = best_time(reference, noise, v, cond)
    print(  # noqa: T201
        f"tora_model.sample: {mine / STEPS * 1e3:.2f} ms/step; diffusers loop: {theirs / STEPS * 1e3:.2f} ms/step"
    )
    print(f"ratio ours/diffusers: {mine / theirs:.2f}")  # noqa: T201


if __name__ == "__main__":
    main()
