"""`python -m tora_model plan`: measured GPU memory per node and the Load Tora Model settings that fit a card.

Every figure comes from simulating the real pipeline at the requested size (`chain.run_chain`), not from weight sizes.
A setting fits a card when the largest node peak plus the memory torch's allocator does not see — the CUDA context and
library workspaces (`CUDA_CONTEXT_GIB`) and fragmentation of the caching allocator (`FRAGMENTATION` of the card) —
stays within the card. Times are roofline estimates (roofline.py), labelled as such.
"""

from __future__ import annotations

import argparse
import logging
import re

from ..errors import ConfigError
from .chain import PRECISIONS, ChainResult, Setting, run_chain
from .roofline import GPUS, TYPICAL_EFFICIENCY

log = logging.getLogger(__name__)

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5  # CUDA context + cuBLAS/cuDNN workspaces, outside torch's allocator
FRAGMENTATION = 0.05  # share of the card kept free for the caching allocator's reserved-but-unused blocks
# In order of preference: fastest first; fp8 halves the block weights; block swap (share of the blocks) trades PCIe
# time for memory. 5B: 0, 10, 21, 32, 42 blocks.
CANDIDATES = (
    ("bf16", 0.0),
    ("fp8_e4m3fn", 0.0),
    ("fp8_e4m3fn", 0.25),
    ("fp8_e4m3fn", 0.5),
    ("fp8_e4m3fn", 0.75),
    ("fp8_e4m3fn", 1.0),
)
NODE_STAGES = (  # (stage record name prefix, node)
    ("text encode", "Tora Text Encode / CLIPLoader (T5-XXL)"),
    ("motion", "Trajectory To Motion Latent"),
    ("sampler", "Tora Sampler"),
    ("decode (tiled", "Motion VAE Decode, tiling on"),
    ("decode (untiled", "Motion VAE Decode, tiling off"),
)


def parse_card(text: str) -> float:
    """'12GB', '12 GiB', '24' → GiB of device memory (consumer cards' GB figures are GiB)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(gib|gb|g)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--gpu takes a card's memory such as 12GB, 16GB or 24GB, got {text!r}")
    return float(match.group(1))


def needed_gib(peak_bytes: int, card_gib: float) -> float:
    """What a node peak needs of a card: the peak, the CUDA context and the fragmentation reserve."""
    return peak_bytes / GIB + CUDA_CONTEXT_GIB + FRAGMENTATION * card_gib


def fits(result: ChainResult, card_gib: float, include_untiled: bool = False) -> bool:
    stages = [s for s in result.stages if include_untiled or not s.name.startswith("decode (untiled")]
    return needed_gib(max(s.peak_bytes for s in stages), card_gib) <= card_gib


def step_seconds(result: ChainResult, gpu, efficiency: float = 1.0) -> float:
    """Estimated seconds per denoising step: roofline compute, block-swap copies overlapped when prefetched."""
    steps = result.stage("denoising steps")
    compute = steps.roofline_seconds.get(gpu.name, 0.0) / result.setting.steps / efficiency
    transfer = result.host_to_device_per_step / (gpu.pcie_gbs * 1e9)
    return max(compute, transfer)


def node_table(result: ChainResult) -> str:
    """Markdown: one row per node with weights, working memory, peak, FLOPs and host↔device bytes."""
    rows = [
        "| node | peak (GiB) | weights on GPU (GiB) | working memory (GiB) | TFLOP | host→GPU, weights included (GiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for prefix, node in NODE_STAGES:
        found = [s for s in result.stages if s.name.startswith(prefix)]
        if not found:
            continue
        stage = found[0]
        weights = (
            stage.peak_bytes - (stage.peak_bytes - stage.start_bytes) if prefix.startswith("decode") else None
        )
        weights = (
            _node_weights(result, prefix) if weights is None or not prefix.startswith("decode") else weights
        )
        rows.append(
            f"| {node} | {stage.peak_bytes / GIB:.2f} | {weights / GIB:.2f} | "
            f"{(stage.peak_bytes - weights) / GIB:.2f} | {stage.flops / 1e12:.1f} | "
            f"{stage.host_to_device_bytes / GIB:.2f} |"
        )
    return "\n".join(rows)


def _node_weights(result: ChainResult, prefix: str) -> int:
    weights = result.weight_bytes
    if prefix.startswith("text"):
        return weights.get("t5", 0)
    if prefix.startswith("motion"):
        return weights.get("vae", 0) + weights.get("extractor", 0)
    if prefix.startswith("sampler"):
        return weights.get("transformer", 0)
    return weights.get("vae", 0)


def summary(result: ChainResult) -> str:
    """Markdown lines: peak, host memory, per-step traffic and FLOPs, estimated seconds per step per card."""
    steps = result.stage("denoising steps")
    per_step_tflop = steps.flops / result.setting.steps / 1e12
    times = ", ".join(
        f"{gpu.name} {step_seconds(result, gpu):.2f}–{step_seconds(result, gpu, TYPICAL_EFFICIENCY):.2f} s"
        for gpu in GPUS
    )
    return "\n".join(
        [
            f"- peak GPU memory of any node (tiled decode): {_peak(result, False) / GIB:.2f} GiB; "
            f"with untiled decode: {_peak(result, True) / GIB:.2f} GiB",
            f"- host memory holding the transformer between nodes: {result.host_model_bytes / GIB:.2f} GiB",
            f"- per denoising step (CFG rows batched): {per_step_tflop:.1f} TFLOP, "
            f"host→GPU {result.host_to_device_per_step / GIB:.2f} GiB, GPU→host {result.device_to_host_per_step / GIB:.2f} GiB",
            *(
                [
                    f"- block swap {result.setting.blocks_to_swap} blocks: {result.host_to_device_per_step / GIB:.2f} GiB "
                    f"host→GPU per step, none back; pinned host memory {result.pinned_bytes / GIB:.2f} GiB on a real GPU "
                    f"(pinning each tensor separately, as before issue 11: {result.pinned_bytes_per_tensor / GIB:.2f} GiB)"
                ]
                if result.setting.blocks_to_swap
                else []
            ),
            f"- estimated time per step (roofline – at {TYPICAL_EFFICIENCY:.0%} of peak; an estimate, not a measurement): "
            f"{times}",
        ]
    )


def _peak(result: ChainResult, include_untiled: bool) -> int:
    return max(
        s.peak_bytes for s in result.stages if include_untiled or not s.name.startswith("decode (untiled")
    )


def recommend(
    card_gib: float, base: Setting, num_blocks: int = 42
) -> tuple[Setting | None, list[ChainResult]]:
    """The first candidate (in CANDIDATES order) whose every node fits the card; all simulated results.

    The first candidate runs every stage; later ones re-run only the sampler (the other nodes do not depend on the
    storage dtype or block swap: all candidates compute in bf16) and reuse the other stage records.
    """
    results: list[ChainResult] = []
    for precision, share in CANDIDATES:
        swap = round(share * num_blocks)
        setting = Setting(
            base.variant, precision, swap, base.width, base.height, base.num_frames, base.steps, base.motion
        )
        log.info("simulating %s", setting.describe())
        if not results:
            result = run_chain(setting)
        else:
            result = _merge(run_chain(setting, stages=("sampler",)), results[0])
        results.append(result)
        if fits(result, card_gib):
            return setting, results
    return None, results


def _merge(sampler_only: ChainResult, full: ChainResult) -> ChainResult:
    """The sampler's records of one run with the other nodes' records of a full run."""
    own = [s for s in sampler_only.stages if s.name.startswith(("sampler", "denoising"))]
    names = {s.name for s in own}
    stages = [s for s in full.stages if s.name not in names] + own
    weights = full.weight_bytes | {"transformer": sampler_only.weight_bytes["transformer"]}
    return ChainResult(
        sampler_only.setting,
        stages,
        weights,
        sampler_only.host_model_bytes,
        sampler_only.host_to_device_per_step,
        sampler_only.device_to_host_per_step,
    )


def add_plan_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=("t2v", "i2v"), default="t2v", help="(default: %(default)s)")
    parser.add_argument("--width", type=int, default=720, help="(default: %(default)s)")
    parser.add_argument("--height", type=int, default=480, help="(default: %(default)s)")
    parser.add_argument("--num-frames", type=int, default=49, help="8k+1 pixel frames (default: %(default)s)")
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        help="simulate this Load Tora Model precision (default: recommend)",
    )
    parser.add_argument(
        "--blocks-to-swap",
        type=int,
        default=0,
        help="block swap count with --precision (default: %(default)s)",
    )
    parser.add_argument("--gpu", help="card memory, e.g. 12GB: recommend the settings that fit it")
    parser.add_argument(
        "--no-motion", dest="motion", action="store_false", help="simulate without a trajectory"
    )


def run_plan(args: argparse.Namespace) -> str:
    """The plan as Markdown (the CLI logs it)."""
    base = Setting(
        args.variant,
        args.precision or "bf16",
        args.blocks_to_swap,
        args.width,
        args.height,
        args.num_frames,
        motion=args.motion,
    )
    card = parse_card(args.gpu) if args.gpu else None
    header = f"Simulated GPU run of the real pipeline: {args.variant.upper()}, {args.width}x{args.height}x{args.num_frames}"
    if args.precision or card is None:
        result = run_chain(base)
        verdict = ""
        if card is not None:
            verdict = (
                f"\n\n{'Fits' if fits(result, card) else 'Does NOT fit'} a {card:g} GB card (tiled decode)."
            )
        return f"Simulated GPU run of the real pipeline: {base.describe()}\n\n{node_table(result)}\n\n{summary(result)}{verdict}"
    chosen, results = recommend(card, base)
    tried = "\n".join(
        f"- {r.setting.describe()}: needs {needed_gib(_peak(r, False), card):.2f} of {card:g} GiB "
        f"({'fits' if fits(r, card) else 'too large'})"
        for r in results
    )
    if chosen is None:
        return (
            f"{header}\n\nNo setting fits a {card:g} GB card at this size:\n{tried}\n\n"
            "Generate fewer frames or a smaller size, or use a larger card."
        )
    swap = (
        f", offload `block_swap`, blocks_to_swap `{chosen.blocks_to_swap}`"
        if chosen.blocks_to_swap
        else ", offload `comfy`"
    )
    return (
        f"{header}\n\nFor a {card:g} GB card, Load Tora Model: precision `{chosen.precision}`{swap}; "
        f"Motion VAE Decode tiling on.\n\nTried (needs = peak + {CUDA_CONTEXT_GIB} GiB CUDA context + "
        f"{FRAGMENTATION:.0%} of the card for allocator fragmentation):\n{tried}\n\n"
        f"{node_table(results[-1])}\n\n{summary(results[-1])}"
    )
