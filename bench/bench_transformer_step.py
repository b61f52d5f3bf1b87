"""One sampling step — batched [uncond; cond] transformer forward + DPM-Solver++(2M) update — ours against diffusers.

Ours: `ToraTransformer` (motion modules off) through `tora_model.sampling`'s own step (CFG on x0, then
`dpmpp_2m_sde_step`, numerics="diffusers"). Reference: `diffusers.CogVideoXTransformer3DModel` at the same config
holding the SAME weight tensors (loaded with assign=True, so no second copy), CFG on v as its pipeline does, then
`CogVideoXDPMScheduler.step`. Both run step 25 of 50 (a second-order step with both noise draws) from the same
latents, contexts, previous x0 and generator seed; the diffusers pipeline builds its RoPE tables once per generation,
so they are built before timing (ours caches them per grid, so warm steps do not rebuild them either).

Configs: `tiny` (the test preset, latents [1, 3, 16, 8, 12]) and `mid`: 4 blocks at the release width (48 heads × 64
= 3072, T5 width 4096, 226 text tokens, time embedding 512) on latents [1, 3, 16, 8, 12] by default (9 frames, 64×96
pixels; --mid-latent T h w to change it). The output-norm eps is 1e-5 on both sides (diffusers' value; SAT uses 1e-6).
Repeats alternate ours/reference (order flipped every repeat) with torch threads fixed; times are best-of and median
of wall time and of process CPU time (on shared cores the CPU time is steadier: it ignores time spent descheduled;
with --threads 1 it is the cleanest comparison, with more threads it includes the pool's spin-waits).

Run: python bench/bench_transformer_step.py [--threads 2] [--configs tiny mid] [--repeats-tiny 30] [--repeats-mid 3]

Measured on the shared 2-core CPU (load 4-5): tiny 0.65-0.88× (ours/diffusers, best and median, 1 or 2 threads);
mid 0.97-1.06× — parity: the same GEMMs make up ~94 % of a mid step on both sides; max|Δv| 8e-7, max|Δx_next| 5e-7.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.schedulers import CogVideoXDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from tests.references import cogvideox_transformer_kwargs  # noqa: E402
from tora_model.config import ToraConfig  # noqa: E402
from tora_model.sampling import StepInfo, _predict_x0, dpmpp_2m_sde_step  # noqa: E402
from tora_model.schedule import DIFFUSERS_SCHEDULER_CONFIG, make_schedule  # noqa: E402
from tora_model.transformer import build_transformer  # noqa: E402

STEPS, INDEX, CFG = 50, 25, 6.0


def configs(mid_latent):
    tiny = ToraConfig.preset("tiny").replace(has_motion_modules=False, out_norm_eps=1e-5)
    mid = ToraConfig(num_layers=4, has_motion_modules=False, out_norm_eps=1e-5)
    return {"tiny": (tiny, (3, 8, 12)), "mid": (mid, tuple(mid_latent))}


def reference_model(cfg, ours):
    with torch.device("meta"):
        reference = CogVideoXTransformer3DModel(**cogvideox_transformer_kwargs(cfg))
    reference.load_state_dict(ours.state_dict(), strict=True, assign=True)  # the same tensors, not a copy
    return reference.eval()


def make_inputs(cfg, latent):
    gen = torch.Generator().manual_seed(0)
    frames, h, w = latent
    x = torch.randn(1, frames, 16, h, w, generator=gen)  # [1, T, 16, h, w]
    cond = torch.randn(1, cfg.max_text_len, cfg.text_dim, generator=gen)  # [1, L, text_dim]
    x0_prev = torch.randn(1, frames, 16, h, w, generator=gen)
    return x, torch.cat([torch.zeros_like(cond), cond]), x0_prev  # context rows [uncond; cond]


def our_step(model, schedule, x, context, x0_prev, seed):
    sa = schedule.sqrt_alphas
    step = StepInfo(index=INDEX, total=STEPS, timestep=schedule.timesteps[INDEX], guided=True)
    outputs = {}

    def model_fn(x_in, timestep, ctx, _step):
        outputs["v"] = model(x_in, timestep, ctx)
        return outputs["v"]

    x0 = _predict_x0(model_fn, x, context, step, schedule.x0_sqrt_alphas[INDEX], CFG)
    gen = torch.Generator().manual_seed(seed)
    x_next = dpmpp_2m_sde_step(x, x0, x0_prev, (sa[INDEX - 1], sa[INDEX], sa[INDEX + 1]), gen)
    return outputs["v"], x_next


def reference_step(model, scheduler, rope, x, context, x0_prev, seed):
    t, back = scheduler.timesteps[INDEX], scheduler.timesteps[INDEX - 1]
    x_in = torch.cat([x, x])  # [2, T, 16, h, w]
    v = model(
        hidden_states=x_in,
        encoder_hidden_states=context,
        timestep=t.expand(2),
        image_rotary_emb=rope,
        return_dict=False,
    )[0]
    v_uncond, v_cond = v.float().chunk(2)
    guided = v_uncond + CFG * (v_cond - v_uncond)
    gen = torch.Generator().manual_seed(seed)
    x_next, _ = scheduler.step(guided, x0_prev, t, back, x, generator=gen, return_dict=False)
    return v, x_next


def timed(fn):
    """(wall seconds, process CPU seconds) of one call; CPU time ignores the time other processes hold the cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name, cfg, latent, repeats):
    build_start = time.perf_counter()
    torch.manual_seed(0)
    ours = build_transformer(cfg)
    reference = reference_model(cfg, ours)
    scheduler = CogVideoXDPMScheduler(**DIFFUSERS_SCHEDULER_CONFIG)
    scheduler.set_timesteps(STEPS)
    frames, h, w = latent
    grid = (h // cfg.patch_size, w // cfg.patch_size)
    rope = get_3d_rotary_pos_embed(cfg.head_dim, ((0, 0), grid), grid, frames, use_real=True)
    x, context, x0_prev = make_inputs(cfg, latent)
    schedule = make_schedule(STEPS, "diffusers")  # once per generation, like the scheduler's set_timesteps
    run_ours = lambda: our_step(ours, schedule, x, context, x0_prev, seed=7)  # noqa: E731
    run_ref = lambda: reference_step(reference, scheduler, rope, x, context, x0_prev, seed=7)  # noqa: E731
    build = time.perf_counter() - build_start

    times = {"ours": [], "diffusers": []}
    with torch.inference_mode():
        (v_ours, x_ours), (v_ref, x_ref) = run_ours(), run_ref()  # warm-up, and the agreement check
        for r in range(repeats):
            order = (("ours", run_ours), ("diffusers", run_ref))
            for side, fn in order if r % 2 == 0 else order[::-1]:
                times[side].append(timed(fn))
    tokens = cfg.max_text_len + frames * grid[0] * grid[1]
    print(  # noqa: T201
        f"{name}: latents [1, {frames}, 16, {h}, {w}] ×2 CFG rows, {tokens} tokens per row, {cfg.num_layers} blocks "
        f"× {cfg.hidden_dim}; {repeats} repeats, build {build:.1f} s; max|Δv| {(v_ours - v_ref).abs().max():.2e} "
        f"(max|v| {v_ref.abs().max():.2f}), max|Δx_next| {(x_ours - x_ref).abs().max():.2e}"
    )
    for column, label in ((0, "wall"), (1, "CPU ")):
        ours_t = [t[column] * 1e3 for t in times["ours"]]
        ref_t = [t[column] * 1e3 for t in times["diffusers"]]
        print(  # noqa: T201
            f"  {label} ms/step  ours best {min(ours_t):9.1f} median {statistics.median(ours_t):9.1f} | diffusers "
            f"best {min(ref_t):9.1f} median {statistics.median(ref_t):9.1f} | ours/diffusers best "
            f"{min(ours_t) / min(ref_t):.3f} median {statistics.median(ours_t) / statistics.median(ref_t):.3f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid"])
    parser.add_argument("--repeats-tiny", type=int, default=30)
    parser.add_argument("--repeats-mid", type=int, default=3)
    parser.add_argument("--mid-latent", type=int, nargs=3, default=[3, 8, 12], metavar=("T", "h", "w"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU")  # noqa: T201
    table = configs(args.mid_latent)
    for name in args.configs:
        cfg, latent = table[name]
        bench(name, cfg, latent, args.repeats_tiny if name == "tiny" else args.repeats_mid)


if __name__ == "__main__":
    main()
