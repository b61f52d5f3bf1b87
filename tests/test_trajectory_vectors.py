"""Shared resampler vectors (tests/fixtures/resample_vectors.json): Python writes them, JS is tested against them.

`python tests/test_trajectory_vectors.py --write` regenerates the fixture from tora_model.resample; the test
below checks the committed fixture still matches the implementation (1e-9 px) and covers every contract feature.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from tora_model.errors import ConfigError, TrajectoryFormatError
from tora_model.resample import canvas_positions, dense_polyline
from tora_model.trajectory import EASINGS, trajectory_from_json

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "resample_vectors.json"


def _track(points, kind="path", interpolation="smooth", start=0, end=None, easing="linear"):
    return {
        "kind": kind,
        "points": points,
        "interpolation": interpolation,
        "start_frame": start,
        "end_frame": end,
        "easing": easing,
    }


def _traj(width, height, *tracks):
    return {"version": 1, "width": width, "height": height, "tracks": list(tracks)}


ZIGZAG = [
    [40.0, 400.0],
    [150.5, 80.25],
    [260.0, 380.0],
    [370.0, 90.0],
    [480.0, 410.0],
    [590.0, 70.0],
    [700.0, 300.0],
]
CASES = [
    ("linear-2pt", 9, _traj(720, 480, _track([[10, 20], [700, 460]], interpolation="linear"))),
    (
        "linear-3pt-ease-in",
        13,
        _traj(720, 480, _track([[0, 0], [360, 240], [720, 0]], "path", "linear", easing="ease-in")),
    ),
    (
        "linear-4pt-ease-out",
        17,
        _traj(
            512,
            512,
            _track([[12.5, 500], [100, 12], [300.25, 300.75], [511, 1]], "path", "linear", easing="ease-out"),
        ),
    ),
    (
        "linear-5pt-ease-in-out",
        49,
        _traj(
            720,
            480,
            _track(
                [[50, 50], [650, 60], [640, 420], [60, 410], [360, 240]],
                "path",
                "linear",
                easing="ease-in-out",
            ),
        ),
    ),
    ("smooth-2pt", 9, _traj(720, 480, _track([[100, 100], [600, 380]]))),
    ("smooth-3pt", 17, _traj(720, 480, _track([[100, 400], [360, 60], [620, 400]]))),
    (
        "smooth-4pt-ease-in",
        21,
        _traj(720, 480, _track([[30, 240], [250, 40], [470, 440], [690, 240]], easing="ease-in")),
    ),
    ("smooth-6pt-ease-out", 25, _traj(720, 480, _track(ZIGZAG[:6], easing="ease-out"))),
    ("smooth-7pt-ease-in-out", 49, _traj(720, 480, _track(ZIGZAG, easing="ease-in-out"))),
    (
        "smooth-8pt-uneven-spacing",
        33,
        _traj(
            640,
            360,
            _track(
                [[10, 10], [12, 11], [200, 300], [201.5, 301.5], [400, 20], [600, 340], [601, 340], [630, 50]]
            ),
        ),
    ),
    ("smooth-start-frame", 17, _traj(720, 480, _track([[100, 240], [360, 100], [620, 240]], start=5))),
    (
        "smooth-start-end",
        17,
        _traj(720, 480, _track([[100, 240], [360, 380], [620, 240]], start=2, end=10, easing="ease-in")),
    ),
    (
        "linear-start-end-ease-in-out",
        13,
        _traj(720, 480, _track([[20, 20], [700, 460]], "path", "linear", 3, 7, "ease-in-out")),
    ),
    (
        "explicit-last-end-frame",
        21,
        _traj(720, 480, _track([[20, 460], [360, 20], [700, 460]], end=20, easing="ease-out")),
    ),
    ("hold", 9, _traj(720, 480, _track([[123.25, 456.5]], kind="hold", interpolation="linear"))),
    ("hold-on-far-corner", 5, _traj(720, 480, _track([[720, 480]], kind="hold"))),
    (
        "multi-track",
        13,
        _traj(
            720,
            480,
            _track([[10, 10], [300, 200], [700, 50]]),
            _track([[360, 240]], kind="hold"),
            _track([[700, 470], [20, 470]], "path", "linear", 4, 12, "ease-in"),
        ),
    ),
    (
        "smooth-coincident-consecutive",
        17,
        _traj(720, 480, _track([[100, 100], [300, 300], [300, 300], [500, 100]])),
    ),
    (
        "linear-coincident-consecutive",
        13,
        _traj(
            720,
            480,
            _track([[100, 100], [100, 100], [300, 300], [300, 300], [500, 100]], interpolation="linear"),
        ),
    ),
    (
        "smooth-closed-loop",
        25,
        _traj(720, 480, _track([[360, 100], [560, 240], [360, 380], [160, 240], [360, 100]])),
    ),
    (
        "smooth-border-overshoot-clamped",
        17,
        _traj(200, 200, _track([[0, 0], [100, 0], [100, 100], [200, 200]])),
    ),
    ("smooth-kj-default-corners", 49, _traj(720, 480, _track([[0, 480], [360, 60], [720, 0]]))),
    ("path-of-equal-points", 9, _traj(720, 480, _track([[250, 250], [250, 250], [250, 250]]))),
]
for easing in EASINGS:  # the fixture must exercise every easing; fail loudly if one is added without a case
    assert any(t["easing"] == easing for _, _, traj in CASES for t in traj["tracks"]), easing

ERROR_CASES = [
    ("end-frame-beyond-frames", 9, _traj(720, 480, _track([[0, 0], [10, 10]], end=9)), "end_frame"),
    ("start-frame-at-last-frame", 9, _traj(720, 480, _track([[0, 0], [10, 10]], start=8)), "start_frame"),
    ("path-with-one-point", 9, _traj(720, 480, _track([[0, 0]])), "points"),
    ("hold-with-two-points", 9, _traj(720, 480, _track([[0, 0], [1, 1]], kind="hold")), "points"),
    ("point-outside-canvas", 9, _traj(720, 480, _track([[0, 0], [720.5, 10]])), "point 1, field 'x'"),
    ("unknown-version", 9, {**_traj(720, 480, _track([[0, 0], [1, 1]])), "version": 2}, "version"),
    ("unknown-key", 9, {**_traj(720, 480, _track([[0, 0], [1, 1]])), "fps": 8}, "unknown key"),
]


def compute_case(num_frames: int, traj_json: dict) -> dict:
    traj = trajectory_from_json(traj_json)
    return {
        "positions": canvas_positions(traj, num_frames).tolist(),
        "polylines": [[list(p) for p in dense_polyline(t, traj.width, traj.height)] for t in traj.tracks],
    }


def build_fixture() -> dict:
    return {
        "description": "Canvas-pixel per-frame positions [track][frame][x, y] from tora_model.resample.canvas_positions "
        "(contract: docs/trajectory_json.md); polylines = the dense curve per track. JS must match within "
        "tolerance_px. error_cases must raise a TrajectoryFormatError/ConfigError whose message contains `match`.",
        "tolerance_px": 1e-6,
        "cases": [
            {"name": name, "num_frames": frames, "trajectory": traj, **compute_case(frames, traj)}
            for name, frames, traj in CASES
        ],
        "error_cases": [
            {"name": name, "num_frames": frames, "trajectory": traj, "match": match}
            for name, frames, traj, match in ERROR_CASES
        ],
    }


def test_fixture_matches_implementation():
    stored = json.loads(FIXTURE.read_text())
    assert [c["name"] for c in stored["cases"]] == [name for name, _, _ in CASES]
    for case in stored["cases"]:
        got = compute_case(case["num_frames"], case["trajectory"])
        np.testing.assert_allclose(
            got["positions"], case["positions"], rtol=0, atol=1e-9, err_msg=case["name"]
        )
        for poly_got, poly_stored in zip(got["polylines"], case["polylines"], strict=True):
            np.testing.assert_allclose(poly_got, poly_stored, rtol=0, atol=1e-9, err_msg=case["name"])


@pytest.mark.parametrize("name,frames,traj,match", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_cases_raise(name, frames, traj, match):
    with pytest.raises((TrajectoryFormatError, ConfigError), match=re.escape(match)):
        canvas_positions(trajectory_from_json(traj), frames)


def test_vectors_hit_the_features_they_name():
    cases = {c["name"]: c for c in build_fixture()["cases"]}
    # Catmull-Rom overshoots below y=0 before (100, 0); the contract clamps the curve to the canvas.
    poly = np.array(cases["smooth-border-overshoot-clamped"]["polylines"][0])
    assert poly[:, 1].min() == 0.0 and (poly[:33, 1] == 0.0).sum() > 2
    # Before start_frame the object waits at P0; after end_frame it stays at the last point.
    pos = np.array(cases["smooth-start-end"]["positions"][0])
    assert (pos[:3] == [100, 240]).all() and (pos[10:] == [620, 240]).all()
    assert np.ptp(cases["path-of-equal-points"]["positions"]) == 0
    hold = np.array(cases["hold-on-far-corner"]["positions"][0])
    assert (hold == [720, 480]).all()


if __name__ == "__main__" and "--write" in sys.argv:
    FIXTURE.write_text(json.dumps(build_fixture(), indent=1) + "\n")
