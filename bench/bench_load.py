"""Benchmark: time and peak memory of `load_transformer` against the naive load, on a random real-width checkpoint.

Writes a random Tora T2V transformer (width 3072, `--layers` blocks, all Tora modules) as one bf16 file — diffusers
layout safetensors (default) or, with `--format sat`, a SAT `mp_rank_00_model_states.pt` — then loads it in two fresh
subprocesses so each peak RSS (ru_maxrss) is that load's alone (the file is written by a third one: Linux carries a
parent's peak RSS into the children it starts):

  ours   `load_transformer(path, dtype=bfloat16)` — meta build, tensors read one at a time into place;
  naive  build the module on the CPU in bf16, then `model.load_state_dict(safetensors.torch.load_file(path))`
         (SAT: `torch.load` without mmap + `keymaps.sat_to_diffusers`).

Prints peak RSS / checkpoint bytes and ours / naive, with and without the interpreter+torch baseline, and times.
Targets: ours ≤ 1.15 × checkpoint bytes and ≤ 0.6 × naive. The full 42-layer model is 12.5 GB (naive ≈ 25 GB of RAM),
so the default is 8 layers (2.25 GiB); run `python bench/bench_load.py [--layers N] [--format sat] [--dir DIR] [--keep]`.
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


def canonical_shapes(layers: int) -> dict:
    """Canonical name -> (shape, stored dtype): bf16 everywhere except the int64 BatchNorm counters."""
    import torch

    from tora_model.transformer import build_transformer

    meta = build_transformer(config_for(layers), device="meta").state_dict()
    return {
        k: (tuple(v.shape), torch.int64 if v.dtype == torch.int64 else torch.bfloat16)
        for k, v in meta.items()
    }


def sat_shapes(layers: int) -> dict:
    """SAT name (with `model.diffusion_model.`) -> (shape, dtype), from the key tables run backwards."""
    from tora_model import keymaps

    canonical = canonical_shapes(layers)
    local = [k for k, v in keymaps.SAT_GLOBAL.items() if v in canonical]
    local += [k for k in canonical if k.startswith(keymaps.EXTRACTOR_PREFIX)]
    local += [template.format(i=i) for template in keymaps.SAT_BLOCK for i in range(layers)]
    shapes = {}
    for target, rule in keymaps.sat_plan(local).rules.items():
        shape, dtype = canonical[target]
        if rule.parts > 1:  # a slice of a fused tensor: the SAT tensor holds all `parts` slices
            shape = (shape[0] // len(rule.take) * rule.parts, *shape[1:])
        shapes[keymaps.SAT_PREFIX + rule.source] = (shape, dtype)
    return shapes


def random_tensor(name: str, shape: tuple, dtype, generator):
    import torch

    if dtype == torch.int64:
        return torch.zeros(shape, dtype=torch.int64)
    if name.endswith("running_var"):
        return torch.rand(shape, generator=generator).add_(0.5).to(dtype)
    return torch.randn(shape, generator=generator).mul_(0.02).to(dtype)


def write_safetensors(path: Path, layers: int) -> None:
    """Stream a random diffusers-layout safetensors file tensor by tensor (never the whole model in memory)."""
    import torch

    shapes = canonical_shapes(layers)
    header, offset = {}, 0
    for name, (shape, dtype) in shapes.items():
        nbytes = math.prod(shape) * dtype.itemsize
        kind = "I64" if dtype == torch.int64 else "BF16"
        header[name] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    generator = torch.Generator().manual_seed(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, (shape, dtype) in shapes.items():
            tensor = random_tensor(name, shape, dtype, generator)
            f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


def write_sat(path: Path, layers: int) -> None:
    """A random SAT `mp_rank_00_model_states.pt` ({'module': …}); torch.save needs it all in memory once."""
    import torch

    generator = torch.Generator().manual_seed(0)
    module = {name: random_tensor(name, *spec, generator) for name, spec in sat_shapes(layers).items()}
    torch.save({"module": module}, path)


def naive_load(path: Path, layers: int, fmt: str):
    """What a loader without care does: full model in RAM, full file in RAM, then copy."""
    import torch

    from tora_model import keymaps
    from tora_model.transformer import build_transformer

    model = build_transformer(config_for(layers), device="cpu", dtype=torch.bfloat16)
    if fmt == "sat":
        state_dict = keymaps.sat_to_diffusers(torch.load(path, weights_only=True)["module"])
    else:
        from safetensors.torch import load_file

        state_dict = load_file(path)
    model.load_state_dict(state_dict)
    return model


def child(mode: str, path: Path, layers: int, fmt: str) -> None:
    """Run one step in this (fresh) process and print a JSON line with its numbers."""
    import torch

    from tora_model.checkpoints import load_transformer

    if mode == "write":  # in a child too: Linux carries a parent's peak RSS into children it forks
        (write_sat if fmt == "sat" else write_safetensors)(path, layers)
        say(json.dumps({"bytes": path.stat().st_size}))
        return
    baseline = current_rss_bytes()
    start = time.perf_counter()
    model = load_transformer(path, dtype=torch.bfloat16) if mode == "ours" else naive_load(path, layers, fmt)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        checksum = float(model.transformer_blocks[0].norm2.linear.weight.float().sum())
    say(
        json.dumps({"seconds": seconds, "peak": peak_rss_bytes(), "baseline": baseline, "checksum": checksum})
    )


def measure(mode: str, path: Path, layers: int, fmt: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--path",
        str(path),
        "--layers",
        str(layers),
        "--format",
        fmt,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{mode} step failed:\n{done.stderr}")
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
    parser.add_argument(
        "--format", choices=["diffusers", "sat"], default="diffusers", help="checkpoint layout"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to write the temporary checkpoint")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint file")
    parser.add_argument("--child", choices=["write", "ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.layers, args.format)
        return
    expected = sum(
        math.prod(shape) * dtype.itemsize for shape, dtype in canonical_shapes(args.layers).values()
    )
    folder = Path(tempfile.mkdtemp(prefix="tora_bench_load_", dir=args.dir))
    free = shutil.disk_usage(folder).free
    if free < expected * 1.1 + 2**30:
        shutil.rmtree(folder)
        say(
            f"SKIP: a {expected / 2**30:.1f} GiB checkpoint does not fit: {free / 2**30:.1f} GiB free at {folder.parent}"
        )
        return
    name = "mp_rank_00_model_states.pt" if args.format == "sat" else "diffusion_pytorch_model.safetensors"
    path = folder / name
    try:
        run(path, args.layers, args.format)
    finally:
        if args.keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(folder)


def run(path: Path, layers: int, fmt: str) -> None:
    start = time.perf_counter()
    size = measure("write", path, layers, fmt)["bytes"]
    say(
        f"checkpoint: {fmt} layout, {layers} layers at width 3072, {size / 2**30:.2f} GiB bf16, "
        f"written in {time.perf_counter() - start:.1f} s"
    )
    ours = measure("ours", path, layers, fmt)
    report("ours ", ours, size)
    if available_ram() < 2.3 * size + 2**30:
        say(
            f"SKIP naive: needs ≈{2.3 * size / 2**30:.1f} GiB of RAM, {available_ram() / 2**30:.1f} GiB available"
        )
        return
    naive = measure("naive", path, layers, fmt)
    report("naive", naive, size)
    if naive["checksum"] != ours["checksum"]:
        sys.exit(f"loaded values differ: checksum ours {ours['checksum']} vs naive {naive['checksum']}")
    above = (ours["peak"] - ours["baseline"]) / (naive["peak"] - naive["baseline"])
    say(
        f"ours / naive: peak RSS {ours['peak'] / naive['peak']:.2f} (above baseline {above:.2f}), "
        f"time {ours['seconds'] / naive['seconds']:.2f}"
    )
    say(
        f"targets: ours peak ≤ 1.15 × checkpoint → {'met' if ours['peak'] <= 1.15 * size else 'NOT met'}; "
        f"≤ 0.6 × naive → {'met' if ours['peak'] <= 0.6 * naive['peak'] else 'NOT met'}"
    )


def report(label: str, numbers: dict, size: int) -> None:
    peak, base = numbers["peak"], numbers["baseline"]
    say(
        f"{label}: {numbers['seconds']:.2f} s, peak RSS {peak / 2**30:.2f} GiB = {peak / size:.2f} × checkpoint "
        f"(baseline {base / 2**30:.2f} GiB; above baseline {(peak - base) / size:.2f} ×)"
    )


if __name__ == "__main__":
    main()
