"""Writing what the command line generates: frames as PNG files, and .mp4/.gif videos when the optional writer is there.

Source: `tora_spec.md` §6.1 (output frames rounded as ·255 + 0.5, 8 fps) and design.md "Outside ComfyUI". Videos need
the optional packages imageio + imageio-ffmpeg (.mp4) or imageio alone (.gif); PNG frames always work through OpenCV.
A video path this installation cannot write is refused before any work (`check_video_writer`). Every output is
written under a temporary name beside its destination and moved into place only once complete, so a failed write
leaves nothing behind.

Layouts: frames float32 [F, H, W, 3] in [0, 1] from the pipeline → uint8 [F, H, W, 3] RGB on disk.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import ConfigError

log = logging.getLogger("tora_model")


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames [F, H, W, 3] in [0, 1] → uint8, rounded like the official writer (·255 + 0.5, then truncated)."""
    return (frames.float() * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


@contextmanager
def _staging(destination: Path) -> Iterator[Path]:
    """A temporary folder beside `destination` (same file system, so moves are renames), removed afterwards."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_frames(frames: np.ndarray, folder: Path, prefix: str = "frame") -> list[Path]:
    """uint8 RGB frames [F, H, W, 3] → folder/prefix_0000.png, … (OpenCV; no optional packages)."""
    names = [f"{prefix}_{i:04d}.png" for i in range(len(frames))]
    with _staging(folder) as staging:
        for name, frame in zip(names, frames, strict=True):
            if not cv2.imwrite(
                str(staging / name), np.ascontiguousarray(frame[..., ::-1])
            ):  # OpenCV writes BGR
                raise ConfigError(f"could not write {staging / name}; check that {folder.parent} is writable")
        folder.mkdir(exist_ok=True)
        for name in names:
            os.replace(staging / name, folder / name)
    return [folder / name for name in names]


def missing_video_packages(suffix: str) -> list[str]:
    """Optional packages a .mp4 (imageio + imageio-ffmpeg) or .gif (imageio) writer needs and does not find."""
    needed = ["imageio", "imageio_ffmpeg"] if suffix == ".mp4" else ["imageio"]
    return [name.replace("_", "-") for name in needed if importlib.util.find_spec(name) is None]


def check_video_writer(path: Path) -> None:
    """Refuse, before any work, a video path this installation cannot write, and say what to do instead."""
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ConfigError(
            f"--out {path}: expected a .mp4 or .gif file name (or use --frames-dir DIR for PNG frames)"
        )
    missing = missing_video_packages(suffix)
    if missing:
        raise ConfigError(
            f"--out {path}: writing {suffix} files needs the optional package(s) {', '.join(missing)}, which are not "
            f"installed. Install them (pip install {' '.join(missing)}) or pass --frames-dir DIR to write PNG frames "
            "instead."
        )


def write_video(frames: np.ndarray, path: Path, fps: int) -> None:
    """uint8 RGB frames [F, H, W, 3] → .mp4 (H.264 via imageio-ffmpeg) or .gif (imageio)."""
    import imageio.v2 as imageio  # optional dependency, checked by check_video_writer

    check_video_writer(path)
    with _staging(path) as staging:
        partial = staging / path.name  # the same suffix: imageio picks the format from it
        if path.suffix.lower() == ".gif":
            imageio.mimsave(partial, list(frames), duration=1000 / fps, loop=0)
        else:
            with imageio.get_writer(
                partial, fps=fps, codec="libx264", quality=8, macro_block_size=1
            ) as writer:
                for frame in frames:
                    writer.append_data(frame)
        os.replace(partial, path)


def write_outputs(frames: torch.Tensor, out: Path | None, frames_dir: Path | None, fps: int) -> None:
    """Frames [F, H, W, 3] in [0, 1] → PNG frames in `frames_dir` and/or a video at `out` (`generate`'s outputs)."""
    pixels = to_uint8(frames)  # [F, H, W, 3]
    if frames_dir is not None:
        write_frames(pixels, frames_dir)
        log.info("wrote %d PNG frames to %s", len(pixels), frames_dir)
    if out is not None:
        write_video(pixels, out, fps)
        log.info("wrote %s (%d frames, %d fps)", out, len(pixels), fps)


def write_preview(pixels: np.ndarray, out: Path, name: str, fps: int) -> None:
    """PNG frames always; a video too when the optional writer is installed (.mp4, else .gif)."""
    write_frames(pixels, out / name, prefix=name)
    log.info("wrote %d PNG frames to %s", len(pixels), out / name)
    for suffix in (".mp4", ".gif"):
        missing = missing_video_packages(suffix)
        if missing:
            log.info("no %s%s: optional package(s) %s not installed", name, suffix, ", ".join(missing))
            continue
        write_video(pixels, out / f"{name}{suffix}", fps)
        log.info("wrote %s", out / f"{name}{suffix}")
        return
