"""Benchmark: time and peak memory of `load_transformer` against the naive load, on a random real-width checkpoint.

Writes a random Tora T2V transformer (width 3072, `--layers` blocks, all Tora modules) as one bf16 diffusers-layout
safetensors file, then loads it in two fresh subprocesses so each peak RSS (ru_maxrss) is that load's alone:

  ours   `load_transformer(path, dtype=bfloat16)` — meta build, tensors read one at a time into place;
  naive  build the module on the CPU in bf16, then `model.load_state_dict(safetensors.torch.load_file(path))`.

Prints peak RSS / checkpoint bytes and ours / naive, with and without the interpreter+torch baseline, and times.
Targets: ours ≤ 1.15 × checkpoint bytes and ≤ 0.6 × naive. The full 42-layer model is 12.5 GB (naive ≈ 25 GB of RAM),
so the default is 8 layers (2.25 GiB); run `python bench/bench_load.py [--layers N] [--dir DIR] [--keep]`.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def say(text: str) -> None:
    print(text)  # noqa: T201 — a benchmark reports on stdout


def config_for(layers: int):
    from tora_model.config import ToraConfig

    return ToraConfig.preset("cogvideox_5b_t2v").replace(num_layers=layers)


def peak_rss_bytes() -> int:
    """Peak resident set of this process so far (ru_maxrss; Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Resident set right now (the baseline: interpreter, torch and tora_model imported, nothing loaded)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def write_checkpoint(path: Path, layers: int) -> int:
    """Stream a random bf16 safetensors file tensor by tensor (never the whole model in memory); returns its size."""
    import torch

    from tora_model.transformer import build_transformer

    shapes = {
        k: (tuple(v.shape), v.dtype)
        for k, v in build_transformer(config_for(layers), device="meta").state_dict().items()
    }
    header, offset = {}, 0
    for name, (shape, dtype) in shapes.items():
        stored = torch.int64 if dtype == torch.int64 else torch.bfloat16
        nbytes = math.prod(shape) * stored.itemsize
        header[name] = {
            "dtype": "I64" if stored == torch.int64 else "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    generator = torch.Generator().manual_seed(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, (shape, dtype) in shapes.items():
            if dtype == torch.int64:
                tensor = torch.zeros(shape, dtype=torch.int64)
            elif name.endswith("running_var"):
                tensor = torch.rand(shape, generator=generator).add_(0.5).to(torch.bfloat16)
            else:
                tensor = torch.randn(shape, generator=generator).mul_(0.02).to(torch.bfloat16)
            f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return path.stat().st_size


def child(mode: str, path: Path, layers: int) -> None:
    """Run one load in this (fresh) process and print a JSON line with its numbers."""
    import torch

    from tora_model.checkpoints import load_transformer
    from tora_model.transformer import build_transformer

    baseline = current_rss_bytes()
    start = time.perf_counter()
    if mode == "ours":
        model = load_transformer(path, dtype=torch.bfloat16)
    else:
        from safetensors.torch import load_file

        model = build_transformer(config_for(layers), device="cpu", dtype=torch.bfloat16)
        model.load_state_dict(load_file(path))
    seconds = time.perf_counter() - start
    checksum = float(model.transformer_blocks[0].attn1.to_q.weight.float().sum())
    say(
        json.dumps({"seconds": seconds, "peak": peak_rss_bytes(), "baseline": baseline, "checksum": checksum})
    )


def measure(mode: str, path: Path, layers: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--path", str(path), "--layers", str(layers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{mode} load failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_ram() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layers", type=int, default=8, help="transformer blocks (42 = the real model, 12.5 GB)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to write the temporary checkpoint")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint file")
    parser.add_argument("--child", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.layers)
        return

    from tora_model.transformer import build_transformer

    meta = build_transformer(config_for(args.layers), device="meta")
    expected = sum(t.numel() * (8 if not t.is_floating_point() else 2) for t in meta.state_dict().values())
    folder = Path(tempfile.mkdtemp(prefix="tora_bench_load_", dir=args.dir))
    free = shutil.disk_usage(folder).free
    if free < expected * 1.1 + 2**30:
        shutil.rmtree(folder)
        say(
            f"SKIP: {expected / 2**30:.1f} GiB checkpoint needs disk space, only {free / 2**30:.1f} GiB free at {folder.parent}"
        )
        return
    path = folder / "diffusion_pytorch_model.safetensors"
    try:
        start = time.perf_counter()
        size = write_checkpoint(path, args.layers)
        say(
            f"checkpoint: {args.layers} layers at width 3072, {size / 2**30:.2f} GiB bf16, written in {time.perf_counter() - start:.1f} s"
        )
        ours = measure("ours", path, args.layers)
        report("ours ", ours, size)
        if available_ram() < 2.3 * size + 2**30:
            say(
                f"SKIP naive: needs ≈{2.3 * size / 2**30:.1f} GiB of RAM, {available_ram() / 2**30:.1f} GiB available"
            )
            return
        naive = measure("naive", path, args.layers)
        report("naive", naive, size)
        if naive["checksum"] != ours["checksum"]:
            sys.exit(f"loaded values differ: checksum ours {ours['checksum']} vs naive {naive['checksum']}")
        say(
            f"ours / naive: peak RSS {ours['peak'] / naive['peak']:.2f} "
            f"(above baseline {(ours['peak'] - ours['baseline']) / (naive['peak'] - naive['baseline']):.2f}), "
            f"time {ours['seconds'] / naive['seconds']:.2f}"
        )
        say(
            f"targets: ours peak ≤ 1.15 × checkpoint → {'met' if ours['peak'] <= 1.15 * size else 'NOT met'}; "
            f"≤ 0.6 × naive → {'met' if ours['peak'] <= 0.6 * naive['peak'] else 'NOT met'}"
        )
    finally:
        if args.keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(folder)


def report(label: str, numbers: dict, size: int) -> None:
    peak, base = numbers["peak"], numbers["baseline"]
    say(
        f"{label}: {numbers['seconds']:.2f} s, peak RSS {peak / 2**30:.2f} GiB = {peak / size:.2f} × checkpoint "
        f"(baseline {base / 2**30:.2f} GiB; above baseline {(peak - base) / size:.2f} ×)"
    )


if __name__ == "__main__":
    main()
