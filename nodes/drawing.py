"""Drawing trajectories onto images for previews: curves, per-frame dots and fading trails (OpenCV, float [0,1]).

Images are ComfyUI IMAGE tensors [F, H, W, 3] float in [0, 1]; positions are [N_tracks, F, 2] pixel floats of that
image size (x right, y down).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

PALETTE = ((230, 57, 70), (69, 123, 157), (42, 157, 143), (244, 162, 97), (131, 56, 236), (255, 190, 11))
BACKGROUND = (0.12, 0.12, 0.12)


def track_color(index: int, color: str | None = None) -> tuple[int, int, int]:
    """RGB 0..255 of a track: its own "#rrggbb" when set, else a fixed palette entry."""
    if color:
        return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    return PALETTE[index % len(PALETTE)]


def blank(width: int, height: int, frames: int = 1) -> torch.Tensor:
    """A dark [frames, height, width, 3] canvas."""
    return torch.tensor(BACKGROUND).expand(frames, height, width, 3).clone()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """IMAGE float in [0, 1] (any leading shape, e.g. [F, H, W, 3]) → uint8 of that shape on the host, rounded."""
    return (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def _points(xy: np.ndarray) -> np.ndarray:
    return np.round(xy).astype(np.int32).reshape(-1, 1, 2)


def draw_paths(
    image: torch.Tensor, positions: np.ndarray, colors: list[tuple[int, int, int]]
) -> torch.Tensor:
    """One [H, W, 3] image with each track's whole path, a ring at its start and a dot at its end."""
    canvas = to_uint8(image).copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 160))
    for track, color in zip(positions, colors, strict=True):
        cv2.polylines(canvas, [_points(track)], False, color, thickness, cv2.LINE_AA)
        start, end = (tuple(int(round(v)) for v in track[i]) for i in (0, -1))
        cv2.circle(canvas, start, 3 * thickness, color, thickness, cv2.LINE_AA)
        cv2.circle(canvas, end, 2 * thickness, color, -1, cv2.LINE_AA)
    return torch.from_numpy(canvas.astype(np.float32) / 255.0)


def draw_dots(
    frames: torch.Tensor,
    positions: np.ndarray,
    colors: list[tuple[int, int, int]],
    radius: int,
    trail: int,
) -> torch.Tensor:
    """Frames [F, H, W, 3]: frame f gets a dot at each track's frame-f position and its last `trail` positions."""
    out = []
    for f, frame in enumerate(frames):
        canvas = to_uint8(frame).copy()
        for track, color in zip(positions, colors, strict=True):
            first = max(0, f - trail)
            if f > first:
                cv2.polylines(
                    canvas, [_points(track[first : f + 1])], False, color, max(1, radius // 2), cv2.LINE_AA
                )
            cv2.circle(canvas, tuple(int(round(v)) for v in track[f]), radius, color, -1, cv2.LINE_AA)
        out.append(torch.from_numpy(canvas.astype(np.float32) / 255.0))
    return torch.stack(out)  # [F, H, W, 3]


def resize_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """One [H, W, 3] image resized to width×height (area filter when shrinking, cubic when growing)."""
    array = image.detach().float().cpu().numpy()
    shrink = width < array.shape[1] or height < array.shape[0]
    resized = cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return torch.from_numpy(np.clip(resized, 0.0, 1.0))
