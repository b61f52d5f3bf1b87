"""Writing what the command line generates: frames as PNG files, and .mp4/.gif videos when the optional writer is there.

Source: `tora_spec.md` §6.1 (output frames rounded as ·255 + 0.5, 8 fps) and design.md "Outside ComfyUI". Videos need
the optional packages imageio + imageio-ffmpeg (.mp4) or imageio alone (.gif); PNG frames always work through OpenCV.
A video path this installation cannot write is refused before any work (`check_video_writer`).

Layouts: frames float32 [F, H, W, 3] in [0, 1] from the pipeline → uint8 [F, H, W, 3] RGB on disk.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import ConfigError

log = logging.getLogger("tora_model")


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames [F, H, W, 3] in [0, 1] → uint8, rounded like the official writer (·255 + 0.5, then truncated)."""
    return (frames.float() * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


def write_frames(frames: np.ndarray, folder: Path, prefix: str = "frame") -> list[Path]:
    """uint8 RGB frames [F, H, W, 3] → folder/prefix_0000.png, … (OpenCV; no optional packages)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = folder / f"{prefix}_{i:04d}.png"
        if not cv2.imwrite(str(path), np.ascontiguousarray(frame[..., ::-1])):  # OpenCV writes BGR
            raise ConfigError(f"could not write {path}; check that the folder is writable")
        paths.append(path)
    return paths


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
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
        return
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)


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
