"""Command line: `python -m tora_model generate …` (real weights) and `python -m tora_model demo` (the tiny Tora).

Source: `tora_spec.md` §6.1 (the official SAT inference: 50 steps, CFG 6 with the dynamic schedule, all-zero
unconditional text, 720×480, 49 frames, 8 fps) and design.md "Outside ComfyUI". Nothing downloads: every model file
is an explicit path, and a missing one names the flag, the path and where to get the file. Flags that would have no
effect, and outputs that cannot be written, are refused before any file is read; every argument (numbers, device,
the content of each weights file's header, the trajectory at the generation size) is checked before any model is
built (argument types and the parser class: `cli_args.py`), and each refusal is one message naming the option, what
was expected, what arrived and how to fix it. Outputs are written only after the run succeeded (`cli_output.py`:
temporary names, then moved into place). The tiny random demo models are built by `tiny/demo_models.py`, the trained
ones loaded by `tiny/demo_trained.py`. `train`, `evaluate` and `calibrate-cache` hand their arguments unchanged to the
tiny Tora's own commands (`TINY_COMMANDS`); their --help is those commands' own.

Layouts: start image float32 RGB [H, W, 3] in [0, 1]; prompt embeddings [1, L, D]; frames as in `cli_output.py`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from .checkpoint_files import check_weights_file, read_state_dict
from .cli_args import (
    Parser,
    check_device,
    finite_float,
    fraction,
    non_negative_float,
    positive_int,
    seed_number,
)
from .cli_output import check_video_writer, to_uint8, write_outputs, write_preview
from .cli_speed import add_speed_args, finish_speed, speed_from_args
from .errors import CheckpointError, ConfigError, ToraError, TrajectoryFormatError
from .flow import SIGMA
from .generation_setup import check_generation_size
from .motion_guidance import motion_from_flow, motion_from_trajectory, trajectory_flow_rgb
from .pipeline import decode_latents, encode_image_latents, sample_latents
from .simulated_gpu.plan import add_plan_args, run_plan
from .tiny.demo_models import build_demo_models, demo_trajectory, encode_demo_prompt, save_demo_models
from .trajectory import load_official_txt, load_trajectory_file

log = logging.getLogger("tora_model")

TRANSFORMER_SOURCE = (
    "get it from Hugging Face 'Alibaba-Research-Intelligence-Computing/Tora' (SAT: tora/t2v or tora/i2v/"
    "mp_rank_00_model_states.pt) or 'Alibaba-Research-Intelligence-Computing/Tora_T2V_diffusers' (transformer/ folder)"
)
VAE_SOURCE = (
    "get the CogVideoX-5B VAE from Hugging Face 'Alibaba-Research-Intelligence-Computing/Tora' (vae/3d-vae.pt) or "
    "'Alibaba-Research-Intelligence-Computing/Tora_T2V_diffusers' (vae/ folder); the SAT Tora .pt file holds it too"
)
T5_SOURCE = (
    "get T5 v1.1 XXL (encoder + tokenizer) from Hugging Face 'Alibaba-Research-Intelligence-Computing/Tora' "
    "(t5-v1_1-xxl/ folder) or 'Alibaba-Research-Intelligence-Computing/Tora_T2V_diffusers' (text_encoder/ + tokenizer/)"
)
EMBEDS_SOURCE = "write one with safetensors.torch.save_file({'prompt_embeds': t5_embeddings}, path), or encode with --t5 instead"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# subcommands that run a tiny Tora command: name -> its module under tora_model.tiny (whose main(argv) gets the rest)
TINY_COMMANDS = {"train": "train", "evaluate": "evaluate", "calibrate-cache": "calibrate_cache"}


@contextmanager
def _about(flag: str) -> Iterator[None]:
    """Errors raised while reading the file given to `flag` name that flag first."""
    try:
        yield
    except ToraError as err:
        raise type(err)(f"{flag}: {err}") from None


def require_path(flag: str, path: Path, what: str, source: str) -> Path:
    """The path if it exists; otherwise a CheckpointError naming the flag, the path and where to get the file."""
    if not path.exists():
        raise CheckpointError(f"{flag} {path}: no such file or folder (expected {what}); {source}")
    return path


def require_image(path: Path) -> Path:
    """The path if it is a file; otherwise a ConfigError naming --image and what it should hold."""
    if not path.is_file():
        raise ConfigError(f"--image {path}: no such file (expected the I2V start image, e.g. a .png or .jpg)")
    return path


def load_image(path: Path) -> np.ndarray:
    """An image file → float32 RGB [H, W, 3] in [0, 1]."""
    require_image(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # [H, W, 3] uint8 BGR
    if image is None:
        raise ConfigError(f"--image {path}: OpenCV cannot read this file as an image; use a .png or .jpg")
    return image[..., ::-1].astype(np.float32) / 255.0


def load_trajectory(paths: list[Path]):
    """One .json/.txt file, or several official .txt files (one track each, like the official --point_path)."""
    for path in paths:
        if not path.is_file():
            raise TrajectoryFormatError(
                f"--trajectory {path}: no such file (expected a trajectory .json from the canvas, or official .txt)"
            )
    if len(paths) == 1:
        return load_trajectory_file(paths[0])
    if any(p.suffix.lower() != ".txt" for p in paths):
        raise TrajectoryFormatError(
            "--trajectory: several files must all be official .txt files (one track each)"
        )
    return load_official_txt(paths)


def load_prompt_embeds(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A .safetensors/.pt file with 'prompt_embeds' [1, L, D] and optionally 'negative_prompt_embeds'.

    Read by content like any weights file (weights only: a pickle holding other objects is refused, not run).
    """
    with _about("--prompt-embeds"):
        tensors = read_state_dict(path)
    embeds = {name: tensors[name] for name in ("prompt_embeds", "negative_prompt_embeds") if name in tensors}
    for name, tensor in embeds.items():
        if tensor.dim() != 3 or tensor.shape[0] != 1 or not tensor.is_floating_point():
            raise ConfigError(
                f"--prompt-embeds {path}: expected '{name}' as a float tensor [1, L, D], got "
                f"{tensor.dtype} {list(tensor.shape)}; {EMBEDS_SOURCE}"
            )
    if "prompt_embeds" not in embeds:
        raise ConfigError(
            f"--prompt-embeds {path}: expected a tensor named 'prompt_embeds' [1, L, D], found "
            f"{sorted(tensors)[:5]}; {EMBEDS_SOURCE}"
        )
    return embeds["prompt_embeds"], embeds.get("negative_prompt_embeds")


def _step_logger(every: int = 1) -> Callable[[int, int, torch.Tensor], None]:
    def progress(step: int, total: int, x0: torch.Tensor) -> None:
        if (step + 1) % every == 0 or step + 1 == total:
            log.info("step %d/%d", step + 1, total)

    return progress


def _sampling_settings(args: argparse.Namespace) -> dict:
    """The `sample_latents` keywords that come straight from the command line."""
    names = ("width", "height", "num_frames", "steps", "cfg", "dynamic_cfg", "sampler")
    return {name: getattr(args, name) for name in names}


# ---------------------------------------------------------------------------------------------------- generate


def _device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    return device, dtype


def _refuse_unused(args: argparse.Namespace) -> None:
    """Flags that would have no effect with the others given are an error, not silently ignored."""
    unused = []
    if args.t5 is None:
        unused += [
            f for f, v in (("--prompt", args.prompt), ("--negative-prompt", args.negative_prompt)) if v
        ]
        unused += ["--t5-tokenizer"] if args.t5_tokenizer is not None else []
    motion = (args.motion_strength, args.motion_start, args.motion_end, args.trajectory_mode)
    if args.trajectory is None and motion != (1.0, 0.0, 1.0, "auto"):
        unused.append("--motion-strength/--motion-start/--motion-end/--trajectory-mode (no --trajectory)")
    if unused:
        raise ConfigError(
            f"{', '.join(unused)} would have no effect: prompts are encoded only with --t5 (--prompt-embeds files "
            "carry 'prompt_embeds' and optionally 'negative_prompt_embeds'); motion settings need --trajectory"
        )


def _check_generate_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before any file is read or any model is built."""
    if args.out is None and args.frames_dir is None:
        raise ConfigError(
            "give --out VIDEO.mp4 and/or --frames-dir DIR: there is nowhere to write the result"
        )
    if args.out is not None:
        check_video_writer(args.out)
    if args.t5 is not None and not args.prompt:
        raise ConfigError('--t5 needs a --prompt "..." to encode')
    _refuse_unused(args)
    check_generation_size(args.width, args.height, args.num_frames, warn=False)
    require_path(
        "--transformer", args.transformer, "a Tora transformer checkpoint file or folder", TRANSFORMER_SOURCE
    )
    if args.motion_modules is not None:
        require_path(
            "--motion-modules",
            args.motion_modules,
            "a folder with fuser/ and traj_extractor/",
            TRANSFORMER_SOURCE,
        )
    require_path("--vae", args.vae, "a CogVideoX VAE file or folder", VAE_SOURCE)
    if args.t5 is not None:
        require_path("--t5", args.t5, "a T5 v1.1 XXL folder with the encoder and tokenizer", T5_SOURCE)
    if args.prompt_embeds is not None:
        require_path(
            "--prompt-embeds",
            args.prompt_embeds,
            "a .safetensors file with 'prompt_embeds' [1, L, D]",
            EMBEDS_SOURCE,
        )
    if args.t5_tokenizer is not None:
        require_path("--t5-tokenizer", args.t5_tokenizer, "a T5 tokenizer folder (spiece.model)", T5_SOURCE)
    if args.image is not None:
        require_image(args.image)
    if args.motion_start > args.motion_end:
        raise ConfigError(
            f"--motion-start {args.motion_start} is after --motion-end {args.motion_end}: the motion window is the "
            "fraction of steps from start to end, e.g. --motion-start 0 --motion-end 0.2"
        )
    check_device(args.device)
    for flag in ("--transformer", "--vae", "--t5", "--prompt-embeds"):  # cheap checks: kind, header, size
        path = getattr(args, flag[2:].replace("-", "_"))
        if path is not None and path.is_file():
            with _about(flag):
                check_weights_file(path)
    if args.vae is not None and args.vae.is_dir():  # config.json read, no weights
        from .vae_loading import check_vae_folder

        with _about("--vae"):
            check_vae_folder(args.vae)


def _text_embeddings(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """(cond [1, L, D], uncond [1, L, D] or None) from --prompt-embeds, or from --t5 + --prompt."""
    if args.prompt_embeds is not None:
        return load_prompt_embeds(args.prompt_embeds)
    from .text import T5TextEncoder, encode_prompt

    t5_dtype = torch.bfloat16 if dtype == torch.float16 else dtype  # T5 v1.1 overflows in float16
    with _about("--t5"):
        encoder = T5TextEncoder.load(args.t5, tokenizer=args.t5_tokenizer, dtype=t5_dtype, device=device)
    # Without --negative-prompt the unconditional context is all zeros (official SAT).
    cond, uncond = encode_prompt(encoder, args.prompt, args.negative_prompt)
    del encoder  # T5-XXL leaves the device before the transformer is loaded
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return cond, uncond


def run_generate(args: argparse.Namespace) -> None:
    from .checkpoints import load_transformer
    from .vae_loading import load_vae

    _check_generate_args(args)
    size = dict(width=args.width, height=args.height, num_frames=args.num_frames)
    # Rendered before any model loads (at the release's σ), so a trajectory that does not fit the video is refused first.
    trajectory = load_trajectory(args.trajectory) if args.trajectory else None
    flow_rgb = None
    if trajectory is not None:
        flow_rgb = trajectory_flow_rgb(trajectory, mode=args.trajectory_mode, **size)
    image = load_image(args.image) if args.image is not None else None
    speed = speed_from_args(args)
    device, dtype = _device_and_dtype(args)
    cond, uncond = _text_embeddings(args, device, dtype)
    with _about("--transformer"):
        model = load_transformer(
            args.transformer, dtype=dtype, device=device, motion_source=args.motion_modules
        )
    with _about("--vae"):
        vae = load_vae(args.vae, dtype=dtype, device=device)
    if trajectory is not None and model.config.flow_sigma != SIGMA:  # a model trained with its own spreading
        flow_rgb = trajectory_flow_rgb(
            trajectory, mode=args.trajectory_mode, sigma=model.config.flow_sigma, **size
        )
    tiling = {"auto": "auto", "on": True, "off": False}[args.vae_tiling]
    generator = torch.Generator("cpu").manual_seed(args.seed)
    # Official order of random draws (spec §6.1): start image, then flow latents, then the initial noise.
    image_latents = None
    if image is not None:
        image_latents = encode_image_latents(vae, image, generator=generator, **size)
    motion = None
    if flow_rgb is not None:
        motion = motion_from_flow(
            model,
            vae,
            flow_rgb,
            generator=generator,
            strength=args.motion_strength,
            start=args.motion_start,
            end=args.motion_end,
            tiling=tiling,
        )
    latents = sample_latents(
        model,
        text_embeds=cond,
        uncond_embeds=uncond,
        generator=generator,
        motion=motion,
        image_latents=image_latents,
        progress=_step_logger(),
        speed=speed,
        **_sampling_settings(args),
    )
    write_outputs(decode_latents(vae, latents, tiling=tiling), args.out, args.frames_dir, args.fps)
    finish_speed(speed, args)


# ---------------------------------------------------------------------------------------------------- demo


def run_demo(args: argparse.Namespace) -> None:
    from .checkpoints import load_transformer
    from .vae_loading import load_vae

    size = dict(width=args.width, height=args.height, num_frames=args.num_frames)
    check_generation_size(**size, warn=False)
    out: Path = args.out
    if args.weights == "trained":
        from .tiny.demo_trained import run_trained_demo

        run_trained_demo(args, write_preview)
        return
    if args.models is not None:
        raise ConfigError(
            "--models is for --weights trained (the default); --weights random builds its own models"
        )
    log.warning("DEMO: tiny models with RANDOM weights — the output is noise, not a real video")
    with tempfile.TemporaryDirectory(prefix="tora_demo_") as tmp:
        paths = save_demo_models(*build_demo_models(args.seed), Path(tmp))
        log.info("tiny random models written to %s and loaded back", tmp)
        model = load_transformer(paths[0])
        vae = load_vae(paths[1])
        cond = encode_demo_prompt(model.config, Path(tmp) / "t5", args.seed)
    generator = torch.Generator("cpu").manual_seed(args.seed)
    motion, flow_rgb = motion_from_trajectory(model, vae, demo_trajectory(), generator=generator, **size)
    write_preview(flow_rgb, out, "flow", args.fps)
    settings = {
        **_sampling_settings(args),
        "cfg": 6.0 if args.cfg is None else args.cfg,
    }  # demo has no default
    latents = sample_latents(
        model, text_embeds=cond, generator=generator, motion=motion, progress=_step_logger(), **settings
    )
    write_preview(to_uint8(decode_latents(vae, latents)), out, "video", args.fps)
    log.warning("DEMO finished: outputs in %s — random weights, so the video is noise by design", out)


# ---------------------------------------------------------------------------------------------------- entry


def _add_generate_args(p: argparse.ArgumentParser) -> None:
    files = p.add_argument_group("model files (explicit paths; nothing downloads)")
    files.add_argument(
        "--transformer", type=Path, required=True, help="Tora transformer: SAT .pt, diffusers folder"
    )
    files.add_argument(
        "--motion-modules", type=Path, help="kijai CogVideoX-5b-Tora folder (fuser/, traj_extractor/)"
    )
    files.add_argument(
        "--vae", type=Path, required=True, help="CogVideoX VAE: 3d-vae.pt, vae/ folder, .safetensors"
    )
    text = files.add_mutually_exclusive_group(required=True)
    text.add_argument(
        "--t5", type=Path, help="T5 v1.1 XXL: folder (encoder + tokenizer), or SAT .pt / .safetensors"
    )
    text.add_argument(
        "--prompt-embeds", type=Path, help="precomputed T5 embeddings (.safetensors 'prompt_embeds')"
    )
    files.add_argument(
        "--t5-tokenizer", type=Path, help="T5 tokenizer folder, when --t5 is a single weights file"
    )
    p.add_argument("--prompt", help="text prompt (needs --t5)")
    p.add_argument(
        "--negative-prompt", help="negative prompt (default: all-zero unconditional context, as SAT)"
    )
    p.add_argument("--image", type=Path, help="start image for the I2V model")
    p.add_argument("--trajectory", type=Path, nargs="+", help="trajectory .json, or official .txt file(s)")
    p.add_argument(
        "--trajectory-mode",
        choices=("auto", "smooth", "official"),
        default="auto",
        help="auto: official processing for official .txt files, smooth resampling otherwise",
    )
    p.add_argument(
        "--motion-strength", type=non_negative_float, default=1.0, help="motion guidance multiplier"
    )
    p.add_argument("--motion-start", type=fraction, default=0.0, help="fraction of steps where motion starts")
    p.add_argument("--motion-end", type=fraction, default=1.0, help="fraction of steps where motion ends")
    _add_sampling_args(p, width=720, height=480, frames=49, steps=50)
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), help="network dtype (default bf16 on CUDA, fp32 on CPU)"
    )
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--vae-tiling", choices=("auto", "on", "off"), default="auto", help="tiled VAE decoding")
    p.add_argument("--out", type=Path, help="output video (.mp4 needs imageio-ffmpeg; .gif needs imageio)")
    p.add_argument("--frames-dir", type=Path, help="also (or only) write PNG frames here")
    add_speed_args(p)


def _add_sampling_args(
    p: argparse.ArgumentParser, *, width: int, height: int, frames: int, steps: int, cfg: float | None = 6.0
) -> None:
    p.add_argument("--width", type=positive_int, default=width, help="video width, a multiple of 16")
    p.add_argument("--height", type=positive_int, default=height, help="video height, a multiple of 16")
    p.add_argument(
        "--num-frames", type=positive_int, default=frames, help="8k+1 pixel frames (9, 17, 25, 33, 41, 49)"
    )
    p.add_argument("--steps", type=positive_int, default=steps, help="denoising steps")
    cfg_help = "CFG scale (the dynamic schedule's scale by default)"
    if cfg is None:
        cfg_help = (
            "CFG scale for --weights random only (6.0 when left out; the trained tiny Tora runs at cfg 1)"
        )
    p.add_argument("--cfg", type=finite_float, default=cfg, help=cfg_help)
    p.add_argument("--no-dynamic-cfg", dest="dynamic_cfg", action="store_false", help="constant CFG weight")
    p.add_argument("--sampler", choices=("dpmpp_2m_sde", "ddim"), default="dpmpp_2m_sde", help="sampler")
    p.add_argument("--seed", type=seed_number, default=42, help="random seed")
    p.add_argument("--fps", type=positive_int, default=8, help="frames per second of the written videos")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m tora_model", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate_args(sub.add_parser("generate", help="generate a video with the released weights"))
    demo = sub.add_parser("demo", help="the trained tiny Tora follows a drawn path, on the CPU in seconds")
    demo.add_argument("--out", type=Path, default=Path("tora_demo"), help="output folder")
    demo.add_argument(
        "--weights",
        choices=("trained", "random"),
        default="trained",
        help="trained: the shipped tiny Tora (models/tiny_tora); random: tiny random models (output is noise)",
    )
    demo.add_argument(
        "--models", type=Path, default=None, help="folder of trained tiny weights (default: models/tiny_tora)"
    )
    # No default --cfg: the trained tiny model has no text and runs at cfg 1; a given --cfg is refused.
    _add_sampling_args(demo, width=96, height=64, frames=17, steps=20, cfg=None)
    plan = sub.add_parser(
        "plan",
        help="simulate the 5B pipeline on a GPU: memory per node, time estimates, settings that fit a card",
    )
    add_plan_args(plan)
    for subparser in sub.choices.values():  # -q also after the subcommand; SUPPRESS keeps one given before it
        subparser.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors"
        )
    for name, module in TINY_COMMANDS.items():  # added after -q: every argument, --help too, is forwarded
        summary = f"the tiny Tora's python -m tora_model.tiny.{module} (arguments and --help are its own)"
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def run_plan_command(args: argparse.Namespace) -> None:
    """Simulate on a fake GPU (no GPU or weights needed) and write the Markdown plan to stdout."""
    sys.stdout.write(run_plan(args) + "\n")


def run_tiny_command(command: str, argv: list[str]) -> None:
    """`python -m tora_model train …` runs `python -m tora_model.tiny.train …` (likewise evaluate, calibrate-cache)."""
    module = importlib.import_module(f"{__package__}.tiny.{TINY_COMMANDS[command]}")
    module.main(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in TINY_COMMANDS:
        if args.quiet:
            parser.error(
                f"-q has no effect on {args.command}: the tiny Tora's commands set their own logging"
            )
        try:  # before logging is configured here: the tiny commands configure their own
            run_tiny_command(args.command, rest)
        except ToraError as err:
            log.error("%s", err)
            return 2
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s"
    )
    started = time.perf_counter()
    try:
        {"generate": run_generate, "demo": run_demo, "plan": run_plan_command}[args.command](args)
    except ToraError as err:
        log.error("%s", err)
        return 2
    log.info("done in %.1f s", time.perf_counter() - started)
    return 0
