"""Trajectory nodes: the TrajectoryCanvas widget's Python side, file/preset/KJNodes loading, and previews.

TORA_TRAJECTORY is `tora_model.trajectory.Trajectory` (frozen): tracks in canvas pixels plus the canvas size.
Positions are resampled to the size asked for, so a canvas of another size than the generation is rescaled
(and logged), never cropped. Trajectory Canvas and Load Trajectory also output ComfyUI core's TRACKS (the per-frame
positions in video pixels, `tora_model.tracks`), which Wan-Move and other trajectory models take.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from ..tora_model.errors import TrajectoryFormatError
from ..tora_model.resample import resample
from ..tora_model.tracks import tracks_from_positions
from ..tora_model.trajectory import (
    Trajectory,
    load_trajectory_file,
    parse_kjnodes_coordinates,
    trajectory_from_json,
)
from . import comfy_glue, drawing

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent / "presets"
TRAJECTORY_EXTENSIONS = (".txt", ".json")
RESAMPLE_MODES = ("auto", "smooth", "official", "per_point")
DEFAULT_CANVAS_JSON = json.dumps(
    {
        "version": 1,
        "width": 720,
        "height": 480,
        "tracks": [
            {
                "kind": "path",
                "points": [[160.0, 300.0], [360.0, 200.0], [560.0, 260.0]],
                "interpolation": "smooth",
                "start_frame": 0,
                "end_frame": None,
                "easing": "linear",
            }
        ],
    }
)
SIZE = {"min": 16, "max": 4096, "step": 16}
FRAMES = {"default": 49, "min": 9, "max": 401, "step": 8}


def positions_for(
    trajectory: Trajectory, frames: int, width: int, height: int, mode: str = "auto"
) -> np.ndarray:
    """Per-frame positions [N_tracks, F, 2] in width×height pixels; logs when the canvas gets rescaled."""
    if (trajectory.width, trajectory.height) != (width, height):
        log.info(
            "trajectory drawn on a %dx%d canvas is rescaled to %dx%d",
            trajectory.width,
            trajectory.height,
            width,
            height,
        )
    return resample(trajectory, frames, width, height, None if mode == "auto" else mode)


def core_tracks(positions: np.ndarray) -> dict:
    """Core TRACKS dict of per-frame positions [N, F, 2], on ComfyUI's intermediate device as core builds it."""
    return tracks_from_positions(positions, comfy_glue.output_device())


def track_colors(trajectory: Trajectory) -> list[tuple[int, int, int]]:
    return [drawing.track_color(i, t.color) for i, t in enumerate(trajectory.tracks)]


def preview_frames(trajectory: Trajectory) -> int:
    """Frames (8k+1, at least 49) long enough for every track's end_frame, for previews without a video length."""
    last = max((t.end_frame or 0 for t in trajectory.tracks), default=0)
    needed = max(FRAMES["default"], last + 1)
    return needed + (-(needed - 1)) % 8


def kjnodes_string(positions: np.ndarray) -> str:
    """KJNodes multi-track coordinate string: [[{"x": .., "y": ..} per frame] per track]."""
    tracks = [[{"x": round(float(x), 2), "y": round(float(y), 2)} for x, y in track] for track in positions]
    return json.dumps(tracks)


def trajectory_sources() -> list[str]:
    presets = sorted(p.name for p in PRESET_DIR.iterdir() if p.suffix in TRAJECTORY_EXTENSIONS)
    uploaded = comfy_glue.input_files(TRAJECTORY_EXTENSIONS)
    return [f"preset/{name}" for name in presets] + [f"input/{name}" for name in uploaded]


def source_path(source: str) -> Path:
    kind, _, name = source.partition("/")
    if kind == "preset":
        path = PRESET_DIR / name
    elif kind == "input":
        path = comfy_glue.input_file_path(name)
    else:
        raise TrajectoryFormatError(f"trajectory source {source!r} should start with 'preset/' or 'input/'")
    if not path.is_file():
        raise TrajectoryFormatError(
            f"trajectory file {name!r} not found in {path.parent}; put .txt (official Tora) or .json "
            "(trajectory JSON v1) files in ComfyUI's input folder"
        )
    return path


class TrajectoryCanvas:
    """Draw trajectories on a canvas (optionally over a background image) and pass them on."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": (
                    "INT",
                    {"default": 720, **SIZE, "tooltip": "Canvas width in pixels; use the video width."},
                ),
                "height": (
                    "INT",
                    {"default": 480, **SIZE, "tooltip": "Canvas height in pixels; use the video height."},
                ),
                "frames": (
                    "INT",
                    {
                        **FRAMES,
                        "tooltip": "Video length in frames (8k+1: 9, 17, …, 49) for timing and playback.",
                    },
                ),
                "trajectory": (
                    "STRING",
                    {
                        "default": DEFAULT_CANVAS_JSON,
                        "multiline": True,
                        "tooltip": "Trajectory JSON v1 written by the canvas editor (tracks of points in canvas "
                        "pixels with timing).",
                    },
                ),
            },
            "optional": {
                "background": (
                    "IMAGE",
                    {
                        "tooltip": "Image shown under the canvas (e.g. the I2V start image); first frame is used."
                    },
                ),
            },
        }

    RETURN_TYPES = ("TORA_TRAJECTORY", "STRING", "IMAGE", "TRACKS")
    RETURN_NAMES = ("trajectory", "coordinates", "preview", "tracks")
    OUTPUT_TOOLTIPS = (
        "The drawn trajectory for Trajectory To Motion Latent / Trajectory Preview.",
        "Per-frame positions as a KJNodes coordinate string [[{x, y}, ...], ...] (also Wan ATI's `tracks` text).",
        "The background with every path drawn, in [0, 1].",
        "ComfyUI core TRACKS: one (x, y) per frame and path in width × height pixels, for Wan-Move and other "
        "trajectory models, or back into Trajectory To Motion Latent.",
    )
    FUNCTION = "run"
    CATEGORY = "Tora/trajectory"
    DESCRIPTION = "Draw one or more motion paths; each path moves one object over the video's frames."

    @classmethod
    def VALIDATE_INPUTS(cls, trajectory):
        try:
            trajectory_from_json(trajectory)
        except TrajectoryFormatError as err:
            return str(err)
        return True

    def run(self, width, height, frames, trajectory, background=None):
        traj = trajectory_from_json(trajectory)
        positions = positions_for(traj, frames, width, height)  # [N, F, 2] canvas pixels
        if background is None:
            base = drawing.blank(width, height)[0]
            ui_images = []
        else:
            base = drawing.resize_image(background[0], width, height)
            ref = comfy_glue.save_temp_image(base, "tora_canvas_bg")
            ui_images = [ref] if ref else []
        preview = drawing.draw_paths(base, positions, track_colors(traj))[None]  # [1, H, W, 3]
        result = (traj, kjnodes_string(positions), preview, core_tracks(positions))
        return {"ui": {"tora_background": ui_images}, "result": result}


class LoadTrajectory:
    """Load a trajectory from an official Tora .txt, a JSON v1 file, a shipped preset or a KJNodes string."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": (
                    trajectory_sources(),
                    {
                        "tooltip": "preset/… ships with the pack; input/… are .txt (official Tora, 256×256 canvas) "
                        "or .json (trajectory JSON v1) files in ComfyUI's input folder.",
                    },
                ),
                "canvas_width": (
                    "INT",
                    {"default": 720, **SIZE, "tooltip": "Pixel width the KJNodes coordinates were drawn on."},
                ),
                "canvas_height": (
                    "INT",
                    {
                        "default": 480,
                        **SIZE,
                        "tooltip": "Pixel height the KJNodes coordinates were drawn on.",
                    },
                ),
            },
            "optional": {
                "coordinates": (
                    "STRING",
                    {
                        "forceInput": True,
                        "tooltip": "KJNodes SplineEditor coordinates (one track, several tracks, or a list of "
                        "strings); when connected it is used instead of `source`.",
                    },
                ),
                "width": (
                    "INT",
                    {"default": 720, **SIZE, "tooltip": "Video width of the TRACKS output (pixels)."},
                ),
                "height": (
                    "INT",
                    {"default": 480, **SIZE, "tooltip": "Video height of the TRACKS output (pixels)."},
                ),
                "frames": (
                    "INT",
                    {
                        **FRAMES,
                        "tooltip": "Video length of the TRACKS output: one position per frame (8k+1).",
                    },
                ),
            },
        }

    RETURN_TYPES = ("TORA_TRAJECTORY", "IMAGE", "TRACKS")
    RETURN_NAMES = ("trajectory", "preview", "tracks")
    OUTPUT_TOOLTIPS = (
        "The loaded trajectory.",
        "Its paths drawn on a dark canvas of the trajectory's size.",
        "ComfyUI core TRACKS at width × height × frames (per-frame positions in pixels), for Wan-Move and other "
        "trajectory models.",
    )
    FUNCTION = "load"
    CATEGORY = "Tora/trajectory"

    @classmethod
    def IS_CHANGED(cls, source, canvas_width, canvas_height, coordinates=None, **video):
        if coordinates is not None:
            return hashlib.sha256(json.dumps(coordinates).encode()).hexdigest()
        try:
            return hashlib.sha256(source_path(source).read_bytes()).hexdigest()
        except (TrajectoryFormatError, OSError):  # OSError covers FileNotFoundError
            return source  # load() reports the missing file

    def load(self, source, canvas_width, canvas_height, coordinates=None, width=720, height=480, frames=49):
        if coordinates is not None:
            traj = parse_kjnodes_coordinates(coordinates, canvas_width, canvas_height)
        else:
            traj = load_trajectory_file(source_path(source))
        positions = positions_for(traj, preview_frames(traj), traj.width, traj.height)
        preview = drawing.draw_paths(drawing.blank(traj.width, traj.height)[0], positions, track_colors(traj))
        video_positions = positions_for(traj, frames, width, height)  # [N, F, 2] video pixels
        return (traj, preview[None], core_tracks(video_positions))


class TrajectoryPreview:
    """Draw per-frame dots and short trails of a trajectory over an image or over video frames."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": (
                    "IMAGE",
                    {"tooltip": "Video frames [F, H, W, 3] (one dot position per frame) or a single image."},
                ),
                "trajectory": (
                    "TORA_TRAJECTORY",
                    {"tooltip": "Trajectory to draw (rescaled to the image size)."},
                ),
                "frames": (
                    "INT",
                    {
                        **FRAMES,
                        "tooltip": "Frames to draw when `images` is a single image; ignored otherwise.",
                    },
                ),
                "radius": ("INT", {"default": 6, "min": 1, "max": 64, "tooltip": "Dot radius in pixels."}),
                "trail": (
                    "INT",
                    {"default": 8, "min": 0, "max": 400, "tooltip": "Frames of trail behind each dot."},
                ),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Frames with the trajectory drawn, in [0, 1].",)
    FUNCTION = "draw"
    CATEGORY = "Tora/trajectory"

    def draw(self, images, trajectory, frames, radius, trail):
        count = images.shape[0] if images.shape[0] > 1 else frames
        video = images if images.shape[0] > 1 else images.expand(count, -1, -1, -1)
        height, width = video.shape[1:3]
        positions = positions_for(trajectory, count, width, height)
        return (drawing.draw_dots(video, positions, track_colors(trajectory), radius, trail),)


NODE_CLASS_MAPPINGS = {
    "TrajectoryCanvas": TrajectoryCanvas,
    "LoadTrajectory": LoadTrajectory,
    "TrajectoryPreview": TrajectoryPreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "TrajectoryCanvas": "Trajectory Canvas (Tora)",
    "LoadTrajectory": "Load Trajectory (Tora)",
    "TrajectoryPreview": "Trajectory Preview (Tora)",
}
