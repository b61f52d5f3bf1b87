"""Property tests: every parser either returns a valid Trajectory or raises TrajectoryFormatError (never another
exception), and the resampler's output is finite, correctly shaped and inside the target frame."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tora_model.errors import ConfigError, TrajectoryFormatError
from tora_model.flow import sparse_displacements
from tora_model.resample import resample
from tora_model.trajectory import (
    EASINGS,
    INTERPOLATIONS,
    Trajectory,
    parse_kjnodes_coordinates,
    parse_official_txt,
    trajectory_from_json,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-300, 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)
json_like = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


def _outcome(parse, *args):
    try:
        result = parse(*args)
    except TrajectoryFormatError:
        return None
    assert isinstance(result, Trajectory)
    return result


@SETTINGS
@given(st.text(alphabet="0123456789,; -.\n\r\tx", max_size=60))
def test_official_txt_never_crashes(text):
    traj = _outcome(parse_official_txt, text)
    if traj is not None:
        assert all(0 <= v < 256 for p in traj.tracks[0].points for v in p)


@SETTINGS
@given(st.one_of(json_like, st.text(max_size=40)))
def test_kjnodes_never_crashes(value):
    text = value if isinstance(value, str) else json.dumps(value)
    _outcome(parse_kjnodes_coordinates, text, 64, 48)
    if isinstance(value, list):
        _outcome(parse_kjnodes_coordinates, [json.dumps(v) for v in value] or ["[]"], 64, 48)


track_fields = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["path", "hold", "other"]),
        "points": st.lists(
            st.lists(st.one_of(st.floats(-5, 300), scalars), min_size=1, max_size=3), max_size=5
        ),
        "interpolation": st.sampled_from([*INTERPOLATIONS, "cubic"]),
        "start_frame": st.one_of(st.integers(-2, 20), scalars),
        "end_frame": st.one_of(st.none(), st.integers(-2, 60), scalars),
        "easing": st.sampled_from([*EASINGS, "bounce"]),
    }
)


@SETTINGS
@given(
    st.fixed_dictionaries(
        {
            "version": st.sampled_from([1, 1, 2, "1"]),
            "width": st.one_of(st.integers(-1, 300), scalars),
            "height": st.one_of(st.integers(-1, 300), scalars),
            "tracks": st.lists(track_fields, max_size=3),
        }
    ),
    json_like,
)
def test_json_never_crashes(doc, junk):
    traj = _outcome(trajectory_from_json, doc)
    if traj is not None:
        assert trajectory_from_json(traj.to_json()) == traj
    _outcome(trajectory_from_json, junk if isinstance(junk, dict) else {"version": 1, "tracks": junk})


@st.composite
def trajectories(draw):
    width, height = draw(st.integers(1, 900)), draw(st.integers(1, 900))
    coords = st.tuples(st.floats(0, width), st.floats(0, height))
    tracks = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            tracks.append({"kind": "hold", "points": [list(draw(coords))]})
        else:
            pts = draw(st.lists(coords, min_size=2, max_size=8))
            # Coincident consecutive points and points on the border are the interesting cases.
            if draw(st.booleans()):
                pts.insert(1, pts[0])
            if draw(st.booleans()):
                pts.append((float(width), draw(st.sampled_from([0.0, float(height)]))))
            tracks.append({"kind": "path", "points": [list(p) for p in pts]})
    start = st.integers(0, 60)
    full = [
        {
            "interpolation": draw(st.sampled_from(INTERPOLATIONS)),
            "start_frame": draw(start),
            "end_frame": draw(st.one_of(st.none(), st.integers(1, 70))),
            "easing": draw(st.sampled_from(EASINGS)),
            **t,
        }
        for t in tracks
    ]
    for t in full:
        if t["end_frame"] is not None and t["end_frame"] <= t["start_frame"]:
            t["end_frame"] = None
    return trajectory_from_json({"version": 1, "width": width, "height": height, "tracks": full})


@SETTINGS
@given(trajectories(), st.integers(0, 70), st.integers(1, 2000), st.integers(1, 2000))
def test_resample_output_is_finite_and_inside_the_frame(traj, frames, width, height):
    try:
        out = resample(traj, frames, width, height)
    except (ConfigError, TrajectoryFormatError) as err:
        assert (frames - 1) % 4 or frames < 5 or "frame" in str(err)
        return
    assert out.shape == (len(traj.tracks), frames, 2) and out.dtype == np.float64
    assert np.isfinite(out).all()
    assert (out >= 0).all() and (out[..., 0] <= width).all() and (out[..., 1] <= height).all()
    # Holds stay put; every track starts at its first control point.
    for track, positions in zip(traj.tracks, out, strict=True):
        first = np.array(track.points[0]) * [width / traj.width, height / traj.height]
        np.testing.assert_allclose(positions[0], first, rtol=1e-12, atol=1e-9)
    # The rasteriser accepts every resampled position.
    frame, row, col, _, _ = sparse_displacements(out, height, width)
    assert (row < height).all() and (col < width).all()


@st.composite
def kjnodes_coordinates(draw):
    """A KJNodes multi-track coordinate string with its canvas: samples anywhere on the canvas (edges included),
    sometimes repeated (pauses) or all equal (the editor's single point)."""
    width, height = draw(st.integers(1, 900)), draw(st.integers(1, 900))
    coords = st.tuples(st.floats(0, width), st.floats(0, height)) | st.just((float(width), float(height)))
    tracks = []
    for _ in range(draw(st.integers(1, 3))):
        pts = draw(st.lists(coords, min_size=1, max_size=70))
        if draw(st.booleans()):
            k = draw(st.integers(0, len(pts) - 1))
            pts[k:k] = [pts[k]] * draw(st.integers(1, 10))
        tracks.append([{"x": x, "y": y} for x, y in pts])
    return json.dumps(tracks), width, height


@SETTINGS
@given(kjnodes_coordinates(), st.integers(1, 17), st.integers(1, 2000), st.integers(1, 2000))
def test_kjnodes_resample_keeps_ends_and_stays_inside(coords, k, width, height):
    text, canvas_w, canvas_h = coords
    traj = parse_kjnodes_coordinates(text, canvas_w, canvas_h)
    frames = 4 * k + 1
    out = resample(traj, frames, width, height)
    assert out.shape == (len(traj.tracks), frames, 2) and np.isfinite(out).all()
    assert (out >= 0).all() and (out[..., 0] <= width).all() and (out[..., 1] <= height).all()
    scale = np.array([width / canvas_w, height / canvas_h])
    for track, positions in zip(traj.tracks, out, strict=True):
        for frame, point in ((0, track.points[0]), (-1, track.points[-1])):
            np.testing.assert_allclose(positions[frame], np.multiply(point, scale), rtol=1e-12, atol=1e-9)
        lo, hi = np.min(track.points, axis=0) * scale, np.max(track.points, axis=0) * scale
        assert ((positions >= lo - 1e-9) & (positions <= hi + 1e-9)).all()
    # One sample per frame on a canvas of the generation size gives the samples themselves, bit for bit: the
    # per-frame positions, written back as a KJNodes string (n == F), resample to exactly themselves.
    same = resample(traj, frames, canvas_w, canvas_h)  # [N, F, 2]
    per_frame = json.dumps([[{"x": x, "y": y} for x, y in positions.tolist()] for positions in same])
    again = resample(parse_kjnodes_coordinates(per_frame, canvas_w, canvas_h), frames, canvas_w, canvas_h)
    assert again.tolist() == same.tolist()
    frame, row, col, _, _ = sparse_displacements(out, height, width)
    assert (row < height).all() and (col < width).all()
