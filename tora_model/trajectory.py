"""Trajectory data model and strict parsers (JSON v1, official Tora .txt, KJNodes coordinate strings).

A `Trajectory` is a canvas size plus tracks of control points in canvas pixels (x right, y down, origin
top-left). It says *where* things move; `tora_model.resample` turns it into per-frame positions in generation
pixels, and `tora_model.flow` turns those into the flow video Tora encodes.

Sources: official .txt format and its processing, tora_spec.md §2.1–§2.2 (alibaba/Tora `sat/utils/flow_utils.py`
read_points/process_points); JSON v1, docs/trajectory_json.md (shared with the TrajectoryCanvas widget);
KJNodes SplineEditor `coord_str` shapes, reference/peers.md §1.3, §2.1, §7.2.

Every parser is strict: malformed or out-of-range input raises `TrajectoryFormatError` naming the track, the
point and the field, what was expected and how to fix it. Nothing is clipped, dropped or guessed.
"""

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import TrajectoryFormatError

JSON_VERSION = 1
OFFICIAL_CANVAS = 256
MAX_CANVAS = 16384  # pixels per side; far above any video size, low enough that a corrupt size is caught
KINDS = ("path", "hold")
INTERPOLATIONS = ("smooth", "linear")
EASINGS = ("linear", "ease-in", "ease-out", "ease-in-out")
_TRACK_KEYS = ("kind", "points", "interpolation", "start_frame", "end_frame", "easing")
_OPTIONAL_TRACK_KEYS = ("name", "color")
_TOP_KEYS = ("version", "width", "height", "tracks")
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_TXT_LINE = re.compile(r"[ \t]*(-?[0-9]+)[ \t]*,[ \t]*(-?[0-9]+)[ \t]*")

Point = tuple[float, float]


@dataclass(frozen=True)
class Track:
    """One moving (or held) object: control points in canvas pixels plus its timing.

    kind: "path" (>= 2 points, moves along them) or "hold" (exactly 1 point, stays still).
    interpolation: "smooth" (centripetal Catmull-Rom) or "linear" (polyline through the points).
    start_frame / end_frame: the motion runs from start_frame to end_frame (None = last frame of the generation);
    before it the object waits at the first point, after it at the last.
    easing: "linear" | "ease-in" | "ease-out" | "ease-in-out" (progress along the arc length over time).
    name / color ("#rrggbb"): UI only, kept on round trip.
    """

    points: tuple[Point, ...]
    kind: str = "path"
    interpolation: str = "smooth"
    start_frame: int = 0
    end_frame: int | None = None
    easing: str = "linear"
    name: str | None = None
    color: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "points", _as_points(self.points))
        object.__setattr__(
            self, "start_frame", _as_int(self.start_frame, "field 'start_frame'", "an integer >= 0")
        )
        if self.end_frame is not None:
            end = _as_int(self.end_frame, "field 'end_frame'", "null or an integer")
            object.__setattr__(self, "end_frame", end)
        _check_track(self)


@dataclass(frozen=True)
class Trajectory:
    """Canvas size (pixels) and its tracks, plus how `resample` times them by default (at most one flag set).

    official: read from official .txt files; lives on the 256×256 canvas with integer points, and `resample`
    processes it exactly like the reference code (tora_spec.md §2.2).
    per_point: read from KJNodes coordinate strings, whose samples are meant one per output frame (their spacing
    carries the speed, peers.md §2.3, §7.2); `resample` times the tracks by point index, not by arc length.
    Neither: drawn paths, timed by arc length with their easing (docs/trajectory_json.md).
    """

    width: int
    height: int
    tracks: tuple[Track, ...]
    official: bool = False
    per_point: bool = False

    def __post_init__(self):
        if isinstance(self.tracks, (str, bytes, Mapping)) or not isinstance(self.tracks, Sequence):
            raise _fail("tracks", f"expected a sequence of Track, got {type(self.tracks).__name__}")
        object.__setattr__(self, "tracks", tuple(self.tracks))
        for name in ("width", "height"):
            value = _as_int(getattr(self, name), name, "a positive integer")
            if value <= 0:
                raise _fail(name, f"expected a positive integer, got {value}")
            if value > MAX_CANVAS:
                raise _fail(
                    name,
                    f"expected a canvas of at most {MAX_CANVAS} pixels, got {value}; "
                    "give the size of the canvas the points were drawn on",
                )
            object.__setattr__(self, name, value)
        _check_canvas(self)

    def to_json(self) -> dict:
        """JSON v1 as a dict (every track key written; name/color only when set)."""
        return {
            "version": JSON_VERSION,
            "width": self.width,
            "height": self.height,
            "tracks": [_track_to_json(t) for t in self.tracks],
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_json())

    @classmethod
    def from_json(cls, data: "str | bytes | Mapping") -> "Trajectory":
        return trajectory_from_json(data)


# ------------------------------------------------------------------------------------------------ validation


def _fail(where: str, message: str) -> TrajectoryFormatError:
    return TrajectoryFormatError(f"{where}: {message}" if where else message)


def _as_int(value, where: str, what: str) -> int:
    """An integer (integral floats accepted, as JSON/JS cannot tell 3 from 3.0); bools refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"expected {what}, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise _fail(where, f"expected {what}, got {value!r}")
    return int(value)


def _as_coord(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(where, f"expected a finite number, got {value!r}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise _fail(where, f"expected a finite number, got {value!r}")
    return result


def _as_points(raw) -> tuple[Point, ...]:
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
        raise _fail("field 'points'", f"expected a list of [x, y], got {type(raw).__name__}")
    points = []
    for j, p in enumerate(raw):
        if isinstance(p, (str, bytes, Mapping)) or not isinstance(p, Sequence) or len(p) != 2:
            raise _fail(f"point {j}", f"expected [x, y], got {p!r}")
        points.append((_as_coord(p[0], f"point {j}, field 'x'"), _as_coord(p[1], f"point {j}, field 'y'")))
    return tuple(points)


def _check_track(track: Track) -> None:
    """Checks that need no canvas; messages are prefixed with the track index by `_track_at`."""
    for key, allowed in (("kind", KINDS), ("interpolation", INTERPOLATIONS), ("easing", EASINGS)):
        if getattr(track, key) not in allowed:
            raise _fail(f"field '{key}'", f"expected one of {allowed}, got {getattr(track, key)!r}")
    n = len(track.points)
    if track.kind == "hold" and n != 1:
        raise _fail("field 'points'", f'a "hold" track needs exactly 1 point, got {n}')
    if track.kind == "path" and n < 2:
        raise _fail("field 'points'", f'a "path" track needs at least 2 points, got {n}; use "hold" for one')
    if track.start_frame < 0:
        raise _fail("field 'start_frame'", f"expected an integer >= 0, got {track.start_frame}")
    if track.end_frame is not None and track.end_frame <= track.start_frame:
        raise _fail(
            "field 'end_frame'",
            f"expected null or an integer > start_frame ({track.start_frame}), got {track.end_frame}",
        )
    if track.name is not None and not isinstance(track.name, str):
        raise _fail("field 'name'", f"expected a string, got {track.name!r}")
    if track.color is not None and not (isinstance(track.color, str) and _COLOR.fullmatch(track.color)):
        raise _fail("field 'color'", f'expected "#rrggbb", got {track.color!r}')


def _track_at(index: int, **fields) -> Track:
    """Build a Track, naming the track index in any error."""
    try:
        return Track(**fields)
    except TrajectoryFormatError as err:
        raise TrajectoryFormatError(f"track {index}, {err}") from None


def _check_canvas(traj: Trajectory) -> None:
    if not traj.tracks:
        raise _fail("tracks", "at least one track is needed")
    for i, track in enumerate(traj.tracks):
        if not isinstance(track, Track):
            raise _fail(f"track {i}", f"expected a Track, got {type(track).__name__}")
        for j, point in enumerate(track.points):
            for name, value, limit in (("x", point[0], traj.width), ("y", point[1], traj.height)):
                if not 0 <= value <= limit:
                    axis = "width" if name == "x" else "height"
                    raise _fail(
                        f"track {i}, point {j}, field '{name}'",
                        f"{value!r} is outside the canvas [0, {limit}] (canvas {axis} {limit}); "
                        "move the point inside the canvas or give the right canvas size",
                    )
    if traj.official and traj.per_point:
        raise _fail(
            "",
            "a trajectory is timed officially or per point, not both; set at most one of official and per_point",
        )
    if traj.official:
        check_official(traj)
    if traj.per_point:
        check_per_point(traj)


def _check_untimed(traj: Trajectory, processing: str) -> None:
    """Raise unless every track is linear without timing settings (index-timed processing has none)."""
    for i, track in enumerate(traj.tracks):
        timing = (track.interpolation, track.easing, track.start_frame, track.end_frame)
        if timing != ("linear", "linear", 0, None):
            raise _fail(
                f"track {i}",
                f"{processing} processing has no interpolation or timing settings (needs interpolation linear, "
                f"easing linear, start_frame 0, end_frame null; got {timing}); use mode='smooth'",
            )


def check_per_point(traj: Trajectory) -> None:
    """Raise unless `traj` can be timed by point index: linear tracks without timing settings."""
    _check_untimed(traj, "per-point")


def check_official(traj: Trajectory) -> None:
    """Raise unless `traj` can be processed like official .txt files: the 256 canvas, integer points in
    [0, 256), linear tracks without timing settings (the official pipeline has none)."""
    if traj.width != OFFICIAL_CANVAS or traj.height != OFFICIAL_CANVAS:
        raise _fail(
            "",
            f"official processing needs the 256x256 canvas, got {traj.width}x{traj.height}; use mode='smooth'",
        )
    _check_untimed(traj, "official")
    for i, track in enumerate(traj.tracks):
        for j, point in enumerate(track.points):
            for name, value in zip(("x", "y"), point, strict=True):
                if not (value.is_integer() and value < OFFICIAL_CANVAS):
                    raise _fail(
                        f"track {i}, point {j}, field '{name}'",
                        f"official processing needs integers in [0, 256), got {value!r}; use mode='smooth'",
                    )


# ------------------------------------------------------------------------------------------------ JSON v1


def _track_to_json(track: Track) -> dict:
    out = {
        "kind": track.kind,
        "points": [[x, y] for x, y in track.points],
        "interpolation": track.interpolation,
        "start_frame": track.start_frame,
        "end_frame": track.end_frame,
        "easing": track.easing,
    }
    if track.name is not None:
        out["name"] = track.name
    if track.color is not None:
        out["color"] = track.color
    return out


def _check_keys(obj: Mapping, required: Sequence[str], optional: Sequence[str], where: str) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise _fail(where, f"missing key(s) {', '.join(missing)}")
    unknown = [k for k in obj if k not in required and k not in optional]
    if unknown:
        allowed = ", ".join([*required, *optional])
        raise _fail(where, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {allowed}")


def _refuse_constant(name: str):
    raise TrajectoryFormatError(f"non-finite number {name} in the JSON; coordinates must be finite")


def _loads(text: "str | bytes", what: str):
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        hint = " (single quotes are not JSON; use double quotes)" if "'" in str(text)[:200] else ""
        raise TrajectoryFormatError(f"{what} is not valid JSON: {err}{hint}") from err


def _json_track(raw, index: int) -> Track:
    where = f"track {index}"
    if not isinstance(raw, Mapping):
        raise _fail(where, f"expected an object, got {type(raw).__name__}")
    _check_keys(raw, _TRACK_KEYS, _OPTIONAL_TRACK_KEYS, where)
    if not isinstance(raw["points"], list):
        raise _fail(
            f"{where}, field 'points'", f"expected a list of [x, y], got {type(raw['points']).__name__}"
        )
    return _track_at(index, **raw)


def trajectory_from_json(data: "str | bytes | Mapping") -> Trajectory:
    """Parse JSON v1 (text or an already decoded dict); strict: unknown versions and keys are refused."""
    obj = _loads(data, "the trajectory") if isinstance(data, (str, bytes)) else data
    if not isinstance(obj, Mapping):
        raise _fail(
            "", f"expected a JSON object with version, width, height, tracks; got {type(obj).__name__}"
        )
    version = obj.get("version")
    if isinstance(version, bool) or version != JSON_VERSION:
        raise _fail(
            "version", f"unsupported trajectory version {version!r}; this pack reads version {JSON_VERSION}"
        )
    _check_keys(obj, _TOP_KEYS, (), "trajectory")
    if not isinstance(obj["tracks"], list):
        raise _fail("tracks", f"expected a list, got {type(obj['tracks']).__name__}")
    return Trajectory(
        width=_as_int(obj["width"], "width", "a positive integer"),
        height=_as_int(obj["height"], "height", "a positive integer"),
        tracks=tuple(_json_track(t, i) for i, t in enumerate(obj["tracks"])),
    )


# ------------------------------------------------------------------------------------------------ official .txt


def _official_track(text: str, index: int, source: str) -> Track:
    where = f"{source} (track {index})"
    points = []
    for line_no, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        match = _TXT_LINE.fullmatch(line)
        if match is None:
            raise _fail(
                f"{where}, line {line_no} (point {len(points)})", f'expected integers "x,y", got {line!r}'
            )
        for name, value in (("x", int(match[1])), ("y", int(match[2]))):
            if not 0 <= value < OFFICIAL_CANVAS:
                raise _fail(
                    f"{where}, line {line_no} (point {len(points)}), field '{name}'",
                    f"{value} is outside the official 256 canvas [0, 255]",
                )
        points.append((int(match[1]), int(match[2])))
    if not points:
        raise _fail(where, "the file holds no points; expected one 'x,y' line per point")
    kind = "hold" if len(points) == 1 else "path"
    return Track(points=points, kind=kind, interpolation="linear")


def parse_official_txt(texts: "str | Sequence[str]", sources: "Sequence[str] | None" = None) -> Trajectory:
    """Official Tora .txt content (one text per track; `x,y` integers per line on the 256 canvas)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    sources = sources or [f"text {i}" for i in range(len(texts))]
    if not texts:
        raise _fail("", "no trajectory text given")
    tracks = tuple(_official_track(t, i, s) for i, (t, s) in enumerate(zip(texts, sources, strict=True)))
    return Trajectory(OFFICIAL_CANVAS, OFFICIAL_CANVAS, tracks, official=True)


def load_official_txt(paths: "str | Path | Sequence[str | Path]") -> Trajectory:
    """Read one or several official .txt files (each one track, like `--point_path a.txt b.txt`)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    texts = [_read_trajectory_text(Path(path)) for path in paths]
    return parse_official_txt(texts, [Path(p).name for p in paths])


def _read_trajectory_text(path: Path) -> str:
    """The UTF-8 text of a trajectory file; anything else is refused with what the file should hold."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TrajectoryFormatError(
            f"{path} is not a text file (byte {err.object[err.start]:#04x} at offset {err.start} is not UTF-8); "
            "expected trajectory JSON from the canvas or an official .txt of 'x,y' lines — check the path"
        ) from None
    except OSError as err:
        raise TrajectoryFormatError(f"cannot read trajectory file {str(path)!r}: {err}") from err


# ------------------------------------------------------------------------------------------------ KJNodes


def _kj_point(raw, where: str) -> Point:
    if not isinstance(raw, Mapping):
        raise _fail(where, f'expected an object {{"x": .., "y": ..}}, got {raw!r}')
    unknown = [k for k in raw if k not in ("x", "y")]
    if unknown or "x" not in raw or "y" not in raw:
        raise _fail(where, f'expected exactly the keys "x" and "y", got {sorted(map(str, raw))}')
    return (_as_coord(raw["x"], f"{where}, field 'x'"), _as_coord(raw["y"], f"{where}, field 'y'"))


def _kj_track(raw: list, index: int) -> Track:
    if not raw:
        raise _fail(f"track {index}", "an empty list of points")
    points = [_kj_point(p, f"track {index}, point {j}") for j, p in enumerate(raw)]
    if all(p == points[0] for p in points):
        # The SplineEditor's "single point" repeats one position for every sample: a hold.
        return Track(points=points[:1], kind="hold", interpolation="linear")
    return Track(points=points, kind="path", interpolation="linear")


def _kj_tracks(value, where: str) -> list[list]:
    """One decoded coordinate value -> list of raw tracks (lists of {x, y})."""
    if not isinstance(value, list) or not value:
        raise _fail(where, f"expected a non-empty list of points or of tracks, got {value!r:.80}")
    if all(isinstance(v, Mapping) for v in value):
        return [value]
    if all(isinstance(v, list) for v in value):
        return value
    raise _fail(
        where, 'expected either [{"x":..,"y":..}, ...] or [[{"x":..,"y":..}, ...], ...], got a mixed list'
    )


def parse_kjnodes_coordinates(coordinates: "str | Sequence[str]", width: int, height: int) -> Trajectory:
    """KJNodes SplineEditor `coord_str` in any of its shapes, on a canvas of width×height pixels.

    Accepted: one JSON string holding a list of {"x","y"} (one track) or a list of such lists (several tracks),
    or a list of such strings (AppendStringsToList). The strings carry no canvas size, so the caller passes the
    SplineEditor's mask_width/mask_height. Tracks are linear polylines through the samples; a track whose
    samples are all equal is a hold. The samples are meant one per output frame, so the trajectory is marked
    `per_point`: `resample` times it by sample index, keeping the speed changes and pauses their spacing holds.
    """
    items = [coordinates] if isinstance(coordinates, str) else coordinates
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, Sequence) or not items:
        raise _fail(
            "coordinates",
            f"expected a JSON string or a non-empty list of JSON strings, got {coordinates!r:.80}",
        )
    raw_tracks = []
    for k, item in enumerate(items):
        where = "coordinates" if isinstance(coordinates, str) else f"coordinates string {k}"
        if not isinstance(item, str):
            raise _fail(where, f"expected a JSON string, got {type(item).__name__}")
        raw_tracks += _kj_tracks(_loads(item, where), where)
    tracks = tuple(_kj_track(t, i) for i, t in enumerate(raw_tracks))
    return Trajectory(width=width, height=height, tracks=tracks, per_point=True)


def load_trajectory_file(path: "str | Path") -> Trajectory:
    """A JSON v1 file (.json) or an official Tora file (.txt), chosen by the file extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return load_official_txt(path)
    if suffix != ".json":
        raise TrajectoryFormatError(
            f"{path.name}: expected a .json (trajectory JSON v1) or .txt (official Tora) file"
        )
    text = _read_trajectory_text(path)
    try:
        return trajectory_from_json(text)
    except TrajectoryFormatError as err:
        raise TrajectoryFormatError(f"{path}: {err}") from None  # the message names the file it is about
