"""ComfyUI core's TRACKS value: per-frame positions out of a trajectory, and a trajectory out of TRACKS.

Core's layout (ComfyUI `comfy_api/latest/_io.py` type TRACKS, a plain dict; produced by `GenerateTracks` and
`WanMoveTracksFromCoords`, consumed by `WanMoveTrackToVideo` in `comfy_extras/nodes_wanmove.py`, read at
Comfy-Org/ComfyUI 0.38.1):

    track_path        float32 [F, N, 2]  (x, y) in pixels of the video (width x height), one entry per video frame
    track_visibility  bool    [F, N]     or the masked form [F, 1] (one flag per frame for every track)

Core consumers treat an entry that is invisible, or outside [0, width) x [0, height), as "no signal at this frame";
a missing track_visibility means every entry is visible.

Going out, `tracks_from_positions` writes the per-frame positions Tora renders (`resample` output, [N, F, 2]) in
that layout, every entry visible. Coming in, `trajectory_from_tracks` builds a per-point `Trajectory` (one point
per frame, so `resample` gives the entries back bit for bit when the frame counts agree). Tora's flow only has
"how far did the point move from frame f-1 to f"; an entry core would ignore must add no motion, so each run of
consecutive usable entries becomes its own track that holds still (zero displacement, no flow) outside its run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch

from .errors import TrajectoryFormatError
from .trajectory import Track, Trajectory

log = logging.getLogger(__name__)

PATH_KEY = "track_path"
VISIBILITY_KEY = "track_visibility"
_HOW_TO = (
    "connect a TRACKS output (GenerateTracks, WanMoveTracksFromCoords, Trajectory Canvas, Load Trajectory) "
    "or give a dict {'track_path': float [frames, tracks, 2] pixels, 'track_visibility': bool [frames, tracks]}"
)


def tracks_from_positions(positions: np.ndarray, device: torch.device | str = "cpu") -> dict:
    """Per-frame positions [N_tracks, F, 2] (pixels of the video) -> core TRACKS dict, every entry visible."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[2] != 2 or positions.shape[0] == 0:
        raise TrajectoryFormatError(
            f"positions must have shape [N_tracks >= 1, frames, 2], got {positions.shape}; pass resample()'s output"
        )
    path = torch.from_numpy(positions.transpose(1, 0, 2).astype(np.float32)).to(device)  # [F, N, 2]
    visible = torch.ones(path.shape[:2], dtype=torch.bool, device=device)  # [F, N]
    return {PATH_KEY: path, VISIBILITY_KEY: visible}


def _as_array(value, key: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TrajectoryFormatError(f"TRACKS[{key!r}] should be a tensor, got {type(value).__name__}; {_HOW_TO}")


def read_tracks(tracks) -> tuple[np.ndarray, np.ndarray]:
    """Check a TRACKS value; returns (path float64 [F, N, 2], visible bool [F, N]) with the masked form expanded."""
    if not isinstance(tracks, Mapping) or PATH_KEY not in tracks:
        found = sorted(map(str, tracks)) if isinstance(tracks, Mapping) else type(tracks).__name__
        raise TrajectoryFormatError(f"TRACKS should be a dict with {PATH_KEY!r}, got {found}; {_HOW_TO}")
    path = _as_array(tracks[PATH_KEY], PATH_KEY).astype(np.float64)
    if path.ndim != 3 or path.shape[2] != 2 or 0 in path.shape[:2]:
        raise TrajectoryFormatError(
            f"TRACKS[{PATH_KEY!r}] should have shape [frames, tracks, 2], got {list(path.shape)}; {_HOW_TO}"
        )
    frames, count = path.shape[:2]
    raw = tracks.get(VISIBILITY_KEY)
    visible = np.ones((frames, count), dtype=bool) if raw is None else _as_array(raw, VISIBILITY_KEY)
    if visible.shape not in ((frames, count), (frames, 1)):
        raise TrajectoryFormatError(
            f"TRACKS[{VISIBILITY_KEY!r}] should have shape [{frames}, {count}] (or [{frames}, 1]) to match "
            f"{PATH_KEY} {list(path.shape)}, got {list(visible.shape)}; {_HOW_TO}"
        )
    visible = np.broadcast_to(visible.astype(bool), (frames, count))
    return path, visible


def _usable(path: np.ndarray, visible: np.ndarray, width: int, height: int) -> np.ndarray:
    """[F, N] entries a core consumer would use: visible, finite and inside the frame (x == width is kept)."""
    x, y = path[..., 0], path[..., 1]
    inside = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (y >= 0) & (x <= width) & (y <= height)
    return visible & inside


def _runs(usable: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [start, end] (inclusive) of True in a 1-D mask with at least two frames (one move)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], usable.astype(np.int8), [0]))))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= 2]


def _held_track(points: np.ndarray, start: int, end: int) -> Track:
    """One point per frame: the run's entries, held at its first entry before and its last entry after."""
    held = points.copy()  # [F, 2]
    held[:start] = points[start]
    held[end + 1 :] = points[end]
    return Track(points=[(float(x), float(y)) for x, y in held], kind="path", interpolation="linear")


def trajectory_from_tracks(tracks, width: int, height: int) -> Trajectory:
    """Core TRACKS (pixels of a width x height video) -> a per-point Trajectory on that canvas.

    A track whose entries are all usable becomes one track with one point per frame. Entries that are invisible
    or outside the frame add no motion: the track is split into its runs of usable frames, each holding still
    outside its run. Tracks with no two consecutive usable frames are left out (logged); if none is left, an
    error says so.
    """
    path, visible = read_tracks(tracks)  # [F, N, 2], [F, N]
    frames, count = visible.shape
    if frames < 2:
        raise TrajectoryFormatError(
            f"TRACKS[{PATH_KEY!r}] has {frames} frame; motion needs at least 2 (one entry per video frame)"
        )
    usable = _usable(path, visible, width, height)
    out, skipped = [], []
    for n in range(count):
        runs = _runs(usable[:, n])
        if not runs:
            skipped.append(n)
        out += [_held_track(path[:, n], a, b) for a, b in runs]
    if (~usable).any():
        log.info(
            "TRACKS: %d of %d entries are invisible or outside the %dx%d frame and add no motion%s",
            int((~usable).sum()),
            usable.size,
            width,
            height,
            f"; tracks {skipped} have no two consecutive usable frames and are left out" if skipped else "",
        )
    if not out:
        raise TrajectoryFormatError(
            f"TRACKS: none of its {count} tracks has two consecutive frames that are visible and inside the "
            f"{width}x{height} frame (entries must lie in [0, {width}] x [0, {height}] pixels); check that the "
            "tracks were made for this video size and that track_visibility is not all False"
        )
    return Trajectory(width=width, height=height, tracks=tuple(out), per_point=True)
