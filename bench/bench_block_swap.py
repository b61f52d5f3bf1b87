"""Block swap on the simulated GPU at the released size: ours against the move-whole-blocks reference, in one run.

Reference: what block swap did before issue 11 (and what most packs do) — a forward pre-hook `block.to(gpu)` and a
forward hook `block.to(cpu, non_blocking=True)`, so every swapped block crosses PCIe twice per forward, and
`non_blocking` copies to the host take page-locked memory from torch's host allocator rounded up to a power of two
per tensor. Ours: `tora_model.block_swap` (masters made once, one pinned buffer per block, nothing copied back, the
next block prefetched). Both run one 5B forward (720×480×49, CFG rows batched, fp8 weights, 20 swapped blocks) on
fake cuda tensors; bytes and peaks are counted by the simulated GPU. Run: python bench/bench_block_swap.py
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from tora_model.config import ToraConfig  # noqa: E402
from tora_model.offload import enable_block_swap, move_resident, store_block_linears  # noqa: E402
from tora_model.simulated_gpu.accounting import DeviceMemory  # noqa: E402
from tora_model.simulated_gpu.chain import pinned_host_bytes  # noqa: E402
from tora_model.simulated_gpu.fake_cuda import materialize, simulated_cuda  # noqa: E402
from tora_model.transformer import build_transformer  # noqa: E402

SWAPPED = 20
CUDA, HOST = torch.device("cuda", 0), torch.device("cpu")
GIB = 2**30


def reference_swap(blocks):
    """The old way: whole blocks moved in and out around every forward."""
    swapped = list(blocks)[-SWAPPED:]

    def bring(module, args) -> None:
        module.to(CUDA)

    def send_back(module, args, out) -> None:
        module.to(HOST, non_blocking=True)

    for block in swapped:
        block.to(HOST)
        block.register_forward_pre_hook(bring)
        block.register_forward_hook(send_back)
    return swapped


def run(kind: str) -> dict:
    model = build_transformer(ToraConfig.preset("cogvideox_5b_t2v"), device="meta", dtype=torch.bfloat16)
    started = time.perf_counter()
    with simulated_cuda(), DeviceMemory() as memory, torch.no_grad():
        materialize(model, HOST)
        store_block_linears(model.transformer_blocks, torch.float8_e4m3fn)
        blocks = model.transformer_blocks
        swapped = enable_block_swap(blocks, SWAPPED, CUDA, HOST) if kind == "ours" else reference_swap(blocks)
        move_resident(model, list(swapped), CUDA)
        x = torch.zeros(2, 13, 16, 60, 90, dtype=torch.bfloat16, device="cuda")
        t = torch.zeros(2, dtype=torch.int64, device="cuda")
        text = torch.zeros(2, 226, 4096, dtype=torch.bfloat16, device="cuda")
        with memory.stage("forward") as record:
            model(x, t, text)
        per_block, per_tensor = pinned_host_bytes(swapped)
    return {
        "host→GPU": record.host_to_device_bytes,
        "GPU→host": record.device_to_host_bytes,
        "peak": record.peak_bytes,
        "pinned": per_block if kind == "ours" else per_tensor,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    reference, ours = run("reference"), run("ours")
    pcie = 25e9  # bytes/s, PCIe 4 x16 from pinned memory
    rows = [
        ("host→GPU per forward (GiB)", "host→GPU"),
        ("GPU→host per forward (GiB)", "GPU→host"),
        ("peak device memory (GiB)", "peak"),
        ("pinned host memory (GiB)", "pinned"),
    ]
    lines = [
        f"5B T2V, fp8 weights, {SWAPPED} swapped blocks, 720x480x49, one forward (2 CFG rows), simulated GPU",
        f"{'':32s} {'reference':>10s} {'ours':>10s} {'ratio':>7s}",
    ]
    for label, key in rows:
        ratio = f"{reference[key] / ours[key]:7.2f}" if ours[key] else "    n/a"
        lines.append(f"{label:32s} {reference[key] / GIB:10.2f} {ours[key] / GIB:10.2f} {ratio}")
    moved = (reference["host→GPU"] + reference["GPU→host"], ours["host→GPU"])
    lines.append(
        f"PCIe time per step at 25 GB/s (an estimate): reference {moved[0] / pcie:.2f} s, synchronous; "
        f"ours {moved[1] / pcie:.2f} s, overlapped with compute by the prefetch"
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
