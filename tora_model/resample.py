"""Trajectory -> per-frame positions: the smooth arc-length resampler, per-point timing and the official processing.

Three modes:
- "smooth" (default for drawn paths): the contract in docs/trajectory_json.md, shared bit-for-bit in spirit with
  the JS canvas (web/js/trajectory_geometry.js, tested against tests/fixtures/resample_vectors.json to 1e-6 px):
  a dense polyline (control points, or centripetal Catmull-Rom sampled 32 times per segment and kept inside the
  canvas), positions at eased fractions of its arc length, then a float rescale canvas -> generation pixels.
- "official": alibaba/Tora `read_points` + `process_points` + `int(W*x/256)` (tora_spec.md §2.2) reproduced
  exactly, for trajectories on the 256 canvas (official .txt files). Fewer than 2 points is a hold at that point
  (the reference's [512, 512] default is a known crash, spec §9.5).
- "per_point" (default for KJNodes coordinate strings, whose samples are meant one per frame, peers.md §2.3, §7.2):
  frame f sits at fractional point index u = f·(n−1)/(F−1), linearly interpolated between the n points, so the
  sample spacing keeps its speed changes and pauses; n == F gives the points themselves. Then the same float
  rescale as "smooth".

Output layout: float64 [N_tracks, F, 2], (x, y) per frame, in pixels of the target frame size.
"""

import bisect
import math

import numpy as np

from .errors import ConfigError, TrajectoryFormatError
from .trajectory import OFFICIAL_CANVAS, Track, Trajectory, check_official, check_per_point

SAMPLES_PER_SEGMENT = 32
MODES = ("smooth", "official", "per_point")

_EASINGS = {
    "linear": lambda u: u,
    "ease-in": lambda u: u * u,
    "ease-out": lambda u: u * (2 - u),
    "ease-in-out": lambda u: 2 * u * u if u < 0.5 else 1 - 2 * (1 - u) * (1 - u),
}


def check_num_frames(num_frames: int) -> int:
    """Frame counts of CogVideoX are 4k+1 (k >= 1): the causal VAE maps 1 + 4 frames per latent (spec §2.6)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise ConfigError(f"num_frames must be an integer of the form 4k+1 (e.g. 49), got {num_frames!r}")
    num_frames = int(num_frames)
    if num_frames < 5 or (num_frames - 1) % 4:
        below = max(5, (num_frames - 1) // 4 * 4 + 1)
        above = max(5, below + 4 if below < num_frames else below)
        nearest = sorted({below, above})
        raise ConfigError(
            f"num_frames must be 4k+1 with k >= 1 (5, 9, ..., 49, ...), got {num_frames}; "
            f"nearest valid: {' or '.join(map(str, nearest))}"
        )
    return num_frames


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer number of pixels, got {value!r}")


# ------------------------------------------------------------------------------------------------ smooth mode


def _catmull_rom(a, b, c, d) -> list[tuple[float, float]]:
    """Samples s = k/32, k = 0..32, of the centripetal Catmull-Rom segment b -> c (neighbours a, d)."""
    d_ab = math.hypot(b[0] - a[0], b[1] - a[1]) ** 0.5
    d_bc = math.hypot(c[0] - b[0], c[1] - b[1]) ** 0.5
    d_cd = math.hypot(d[0] - c[0], d[1] - c[1]) ** 0.5
    if d_bc == 0:
        return [(b[0], b[1])] * (SAMPLES_PER_SEGMENT + 1)
    d_ab = d_ab if d_ab != 0 else d_bc
    d_cd = d_cd if d_cd != 0 else d_bc
    m_b = [
        ((b[k] - a[k]) / d_ab - (c[k] - a[k]) / (d_ab + d_bc) + (c[k] - b[k]) / d_bc) * d_bc for k in (0, 1)
    ]
    m_c = [
        ((c[k] - b[k]) / d_bc - (d[k] - b[k]) / (d_bc + d_cd) + (d[k] - c[k]) / d_cd) * d_bc for k in (0, 1)
    ]
    samples = []
    for k in range(SAMPLES_PER_SEGMENT + 1):
        s = k / SAMPLES_PER_SEGMENT
        s2 = s * s
        s3 = s2 * s
        h00, h10 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s
        h01, h11 = -2 * s3 + 3 * s2, s3 - s2
        samples.append(tuple(h00 * b[i] + h10 * m_b[i] + h01 * c[i] + h11 * m_c[i] for i in (0, 1)))
    return samples


def dense_polyline(track: Track, width: float, height: float) -> list[tuple[float, float]]:
    """The curve of a track as a polyline in canvas pixels (smooth samples clamped to the canvas)."""
    pts = track.points
    if track.kind == "hold" or track.interpolation == "linear":
        return list(pts)
    n = len(pts)
    out = []
    for i in range(n - 1):
        b, c = pts[i], pts[i + 1]
        a = pts[i - 1] if i > 0 else (2 * b[0] - c[0], 2 * b[1] - c[1])
        d = pts[i + 2] if i + 2 < n else (2 * c[0] - b[0], 2 * c[1] - b[1])
        samples = _catmull_rom(a, b, c, d)
        out += samples if i == 0 else samples[1:]
    # Catmull-Rom may overshoot the control points; the curve is kept on the canvas (contract, "Curve").
    return [(min(max(x, 0.0), width), min(max(y, 0.0), height)) for x, y in out]


def _cumulative(poly: list[tuple[float, float]]) -> list[float]:
    cum = [0.0]
    for (x0, y0), (x1, y1) in zip(poly, poly[1:], strict=False):
        cum.append(cum[-1] + math.hypot(x1 - x0, y1 - y0))
    return cum


def _point_at(poly, cum, target: float) -> tuple[float, float]:
    total = cum[-1]
    if total == 0:
        return poly[0]
    if target >= total:
        return poly[-1]
    # Smallest j with cum[j] <= target <= cum[j+1] on a segment of positive length.
    i = bisect.bisect_left(cum, target)
    j = i - 1 if i > 0 else 0
    while cum[j + 1] == cum[j]:
        j += 1
    t = (target - cum[j]) / (cum[j + 1] - cum[j])
    (x0, y0), (x1, y1) = poly[j], poly[j + 1]
    return (x0 + t * (x1 - x0), y0 + t * (y1 - y0))


def _frame_fraction(f: int, start: int, end: int) -> float:
    if f <= start:
        return 0.0
    if f >= end:
        return 1.0
    return (f - start) / (end - start)


def _track_end(track: Track, index: int, num_frames: int) -> int:
    if track.kind == "hold":
        return num_frames - 1
    if track.end_frame is not None and track.end_frame >= num_frames:
        raise TrajectoryFormatError(
            f"track {index}, field 'end_frame': {track.end_frame} must be < num_frames ({num_frames}); "
            "lower end_frame or generate more frames"
        )
    end = num_frames - 1 if track.end_frame is None else track.end_frame
    if track.start_frame >= end:
        raise TrajectoryFormatError(
            f"track {index}, field 'start_frame': {track.start_frame} must be < the last frame of the motion "
            f"({end}) for num_frames {num_frames}; lower start_frame or generate more frames"
        )
    return end


def track_canvas_positions(
    track: Track, index: int, num_frames: int, width: float, height: float
) -> np.ndarray:
    """[F, 2] float64 positions of one track in canvas pixels (contract, "Per-frame positions")."""
    end = _track_end(track, index, num_frames)
    poly = dense_polyline(track, width, height)
    cum = _cumulative(poly)
    ease = _EASINGS[track.easing]
    total = cum[-1]
    out = [
        _point_at(poly, cum, ease(_frame_fraction(f, track.start_frame, end)) * total)
        for f in range(num_frames)
    ]
    return np.asarray(out, dtype=np.float64)  # [F, 2]


def canvas_positions(trajectory: Trajectory, num_frames: int) -> np.ndarray:
    """[N_tracks, F, 2] float64 per-frame positions in CANVAS pixels, before any rescale (the JS twin's output)."""
    num_frames = check_num_frames(num_frames)
    w, h = trajectory.width, trajectory.height
    return np.stack(
        [track_canvas_positions(t, i, num_frames, w, h) for i, t in enumerate(trajectory.tracks)]
    )  # [N, F, 2]


# ------------------------------------------------------------------------------------------------ per_point mode


def track_per_point_positions(track: Track, num_frames: int) -> np.ndarray:
    """[F, 2] float64 canvas positions: frame f at index u = f·(n−1)/(F−1) between the n points, linearly.

    The index is split exactly in integers (segment i, remainder r of f·(n−1) by F−1), so frames that fall on a
    point (all of them when n == F, the first and last always) give that point bit for bit; nothing is dropped
    when n > F, and n < F is spread uniformly over the segments.
    """
    pts = track.points
    out = []
    for f in range(num_frames):
        i, r = divmod(f * (len(pts) - 1), num_frames - 1)
        if r == 0:
            out.append(pts[i])
            continue
        t = r / (num_frames - 1)
        (x0, y0), (x1, y1) = pts[i], pts[i + 1]
        out.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
    return np.asarray(out, dtype=np.float64)  # [F, 2]


def per_point_positions(trajectory: Trajectory, num_frames: int) -> np.ndarray:
    """[N_tracks, F, 2] float64 per-frame positions in CANVAS pixels, timed by point index (no easing)."""
    num_frames = check_num_frames(num_frames)
    check_per_point(trajectory)
    return np.stack([track_per_point_positions(t, num_frames) for t in trajectory.tracks])  # [N, F, 2]


# ------------------------------------------------------------------------------------------------ official mode


def _read_points(points: list, num_frames: int) -> list:
    """Reference read_points: keep every floor(len/N)-th point when there are too many, then the first N."""
    if len(points) > num_frames:
        points = points[:: len(points) // num_frames]
    return points[:num_frames]


def _process_points(points: list, num_frames: int) -> list:
    """Reference process_points (spec §2.2): stride down, or insert front-loaded truncated linear points."""
    if len(points) < 2:
        return [points[0]] * num_frames  # a hold (the reference's [512, 512] default is a bug)
    if len(points) >= num_frames:
        return points[:: len(points) // num_frames][: num_frames - 1] + points[-1:]
    intervals = len(points) - 1
    per, extra = divmod(num_frames - len(points), intervals)
    out = []
    for i in range(intervals):
        inserts = per + (1 if i < extra else 0)
        (x0, y0), (x1, y1) = points[i], points[i + 1]
        out.append(points[i])
        for j in range(1, inserts + 1):
            frac = j / (inserts + 1)
            out.append([int(x0 + frac * (x1 - x0)), int(y0 + frac * (y1 - y0))])
    return out + points[-1:]


def official_positions(trajectory: Trajectory, num_frames: int, width: int, height: int) -> np.ndarray:
    """[N_tracks, F, 2] float64 integer-valued pixel positions, exactly as the official Tora code."""
    num_frames = check_num_frames(num_frames)
    _check_size(width, height)
    check_official(trajectory)
    out = []
    for track in trajectory.tracks:
        points = [[int(x), int(y)] for x, y in track.points]
        points = _process_points(_read_points(points, num_frames), num_frames)
        out.append([[width * x // OFFICIAL_CANVAS, height * y // OFFICIAL_CANVAS] for x, y in points])
    return np.asarray(out, dtype=np.float64)  # [N, F, 2]


# ------------------------------------------------------------------------------------------------ entry point


def resample(
    trajectory: Trajectory, num_frames: int, width: int, height: int, mode: str | None = None
) -> np.ndarray:
    """Per-frame positions [N_tracks, F, 2] (float64, x then y) in GENERATION pixels of a width×height video.

    mode: "smooth", "official" or "per_point"; None picks "official" for trajectories read from official .txt
    files, "per_point" for KJNodes coordinate strings and "smooth" otherwise. Positions satisfy 0 <= x <= width,
    0 <= y <= height (the rasteriser maps x == width to the last column).
    """
    if mode is None:
        mode = "official" if trajectory.official else "per_point" if trajectory.per_point else "smooth"
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    _check_size(width, height)
    if mode == "official":
        return official_positions(trajectory, num_frames, width, height)
    if mode == "per_point":
        canvas = per_point_positions(trajectory, num_frames)  # [N, F, 2]
    else:
        canvas = canvas_positions(trajectory, num_frames)  # [N, F, 2]
    if (width, height) == (trajectory.width, trajectory.height):
        return canvas  # x * W / W is not always x in floating point; the same size keeps positions exact
    # x * W_gen / W_canvas (multiply first: x == W_canvas lands exactly on W_gen, never beyond).
    return (
        canvas * np.array([width, height], dtype=np.float64) / np.array([trajectory.width, trajectory.height])
    )
