"""ComfyUI core TRACKS out of and into the pack (tora_model/tracks.py and the three trajectory nodes).

Layout read from Comfy-Org/ComfyUI 0.38.1 (`comfy_api/latest/_io.py` TRACKS, `comfy_extras/nodes_wanmove.py`):
track_path float32 [frames, tracks, 2] in video pixels, track_visibility bool [frames, tracks] or [frames, 1].
The core-shaped values below are built here from that description (normalised start/end -> pixels, one entry per
frame, eased progress, tracks spread perpendicular to the motion), not from core's code.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.test_nodes_e2e import CANVAS, F, H, W, env, load, nodes  # noqa: F401 - env is a fixture
from tora_model.errors import TrajectoryFormatError
from tora_model.flow import sparse_displacements
from tora_model.resample import resample
from tora_model.tracks import read_tracks, tracks_from_positions, trajectory_from_tracks
from tora_model.trajectory import trajectory_from_json

DRAWN = {
    "version": 1,
    "width": 720,
    "height": 480,
    "tracks": [
        {
            "kind": "path",
            "points": [[100.5, 300.25], [360.0, 200.0], [620.0, 260.0]],
            "interpolation": "smooth",
            "start_frame": 4,
            "end_frame": 40,
            "easing": "ease-in-out",
        },
        {
            "kind": "hold",
            "points": [[700.0, 470.0]],
            "interpolation": "linear",
            "start_frame": 0,
            "end_frame": None,
            "easing": "linear",
        },
        {
            "kind": "path",
            "points": [[0.0, 0.0], [720.0, 480.0]],
            "interpolation": "linear",
            "start_frame": 0,
            "end_frame": None,
            "easing": "ease-out",
        },
    ],
}


def core_like_tracks(width, height, frames, start, end, count=3, spread=0.025, easing="linear", mask=None):
    """TRACKS as core's generator describes them: pixels, one entry per frame, tracks side by side."""
    t = np.linspace(0.0, 1.0, frames)
    progress = {"linear": t, "ease_in": t * t, "ease_out": 1 - (1 - t) ** 2}[easing]
    (x0, y0), (x1, y1) = (start[0] * width, start[1] * height), (end[0] * width, end[1] * height)
    length = math.hypot(x1 - x0, y1 - y0)
    normal = (-(y1 - y0) / length, (x1 - x0) / length)
    gap = spread * (width + height) / 2
    path = np.empty((frames, count, 2))
    for n in range(count):
        offset = (n - (count - 1) / 2) * gap
        path[:, n, 0] = x0 + (x1 - x0) * progress + normal[0] * offset
        path[:, n, 1] = y0 + (y1 - y0) * progress + normal[1] * offset
    visible = torch.ones(frames, count, dtype=torch.bool) if mask is None else torch.as_tensor(mask)[:, None]
    return {"track_path": torch.tensor(path, dtype=torch.float32), "track_visibility": visible}


def test_ours_to_tracks_to_ours_keeps_every_per_frame_position():
    trajectory = trajectory_from_json(DRAWN)
    for frames, width, height in ((49, 720, 480), (81, 832, 480), (41, 96, 64)):
        positions = resample(trajectory, frames, width, height)  # [N, F, 2] float64
        tracks = tracks_from_positions(positions)
        assert tracks["track_path"].dtype == torch.float32 and tracks["track_visibility"].dtype == torch.bool
        assert tuple(tracks["track_path"].shape) == (frames, 3, 2)  # [frames, tracks, (x, y)]
        assert tuple(tracks["track_visibility"].shape) == (frames, 3) and tracks["track_visibility"].all()
        back = trajectory_from_tracks(tracks, width, height)
        assert back.per_point and (back.width, back.height) == (width, height) and len(back.tracks) == 3
        again = resample(back, frames, width, height)  # per_point: the entries themselves, bit for bit
        assert np.array_equal(again, positions.astype(np.float32).astype(np.float64))
        assert np.array_equal(tracks_from_positions(again)["track_path"], tracks["track_path"])


def test_canvas_and_load_trajectory_output_core_tracks(env):  # noqa: F811
    n = nodes(env)
    traj, coordinates, _, tracks = n["TrajectoryCanvas"].run(720, 480, 49, json.dumps(DRAWN))["result"]
    expected = resample(trajectory_from_json(DRAWN), 49, 720, 480).transpose(1, 0, 2).astype(np.float32)
    assert np.array_equal(tracks["track_path"].numpy(), expected)
    kj = json.loads(coordinates)  # the same frames, as the KJNodes / Wan ATI string
    assert np.abs(np.array([[p["x"], p["y"]] for p in kj[0]]) - expected[:, 0]).max() <= 0.005 + 1e-4
    official, _, official_tracks = n["LoadTrajectory"].load(
        "preset/zigzag_256.txt", 720, 480, None, 832, 480, 81
    )
    assert official.official and tuple(official_tracks["track_path"].shape) == (81, 1, 2)
    want = resample(official, 81, 832, 480).transpose(1, 0, 2).astype(np.float32)
    assert np.array_equal(official_tracks["track_path"].numpy(), want)  # video pixels, not the 256 canvas
    assert n["LoadTrajectory"].load("preset/orbit.json", 720, 480)[2]["track_path"].shape == (49, 1, 2)


def test_core_generator_tracks_drive_the_motion_node(env):  # noqa: F811
    model, vae = load(env)
    node = nodes(env)["TrajectoryToMotionLatent"]
    for easing in ("linear", "ease_in", "ease_out"):
        tracks = core_like_tracks(W, H, F, (0.2, 0.3), (0.8, 0.7), easing=easing)
        motion, flow = node.encode(model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True, tracks=tracks)
        assert (motion.width, motion.height, motion.num_frames) == (W, H, F) and flow[1:].std() > 0
    # WanMoveTracksFromCoords-shaped TRACKS from a coordinate string == Load Trajectory of the same string
    kj = [
        [{"x": 10 + 8 * f, "y": 20 + 3 * f} for f in range(F)],
        [{"x": 80 - 5 * f, "y": 50} for f in range(F)],
    ]
    path = torch.tensor([[[p["x"], p["y"]] for p in (a, b)] for a, b in zip(*kj, strict=True)])
    from_tracks, _ = node.encode(
        model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True, tracks={"track_path": path.float()}
    )
    loaded, _, _ = nodes(env)["LoadTrajectory"].load("preset/orbit.json", W, H, json.dumps(kj))
    from_string, _ = node.encode(model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True, trajectory=loaded)
    for a, b in zip(from_tracks.features, from_string.features, strict=True):
        assert torch.equal(a, b)
    # 81-frame TRACKS (core's default length) into a 9-frame generation: timed per entry, ends kept
    long = core_like_tracks(W, H, 81, (0.1, 0.1), (0.9, 0.9), count=1)
    positions = resample(trajectory_from_tracks(long, W, H), F, W, H)[0]
    assert positions[0] == pytest.approx(long["track_path"][0, 0].tolist())
    assert positions[-1] == pytest.approx(long["track_path"][-1, 0].tolist())
    errors = env.tora_model.errors
    trajectory = trajectory_from_json(CANVAS)
    with pytest.raises(errors.ConfigError, match="trajectory and tracks are connected"):
        node.encode(model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True, trajectory=trajectory, tracks=long)


def test_invisible_and_off_frame_entries_add_no_motion():
    frames = 17
    full = core_like_tracks(96, 64, frames, (0.1, 0.2), (0.9, 0.8), count=2)
    hidden = list(range(5, 9))
    mask = torch.ones(frames, dtype=torch.bool)
    mask[hidden] = False  # core's masked form: one flag per frame for every track
    masked = {**full, "track_visibility": mask[:, None]}

    def moves(tracks):
        points = resample(trajectory_from_tracks(tracks, 96, 64), frames, 96, 64)
        frame, row, col, dx, dy = sparse_displacements(points, 64, 96)
        return {
            (int(f), int(r), int(c)): (float(x), float(y))
            for f, r, c, x, y in zip(frame, row, col, dx, dy, strict=True)
        }

    everything, visible_only = moves(full), moves(masked)
    touching = {f for h in hidden for f in (h, h + 1)}  # moves into or out of a hidden frame
    assert {k for k in everything if k[0] not in touching} == set(visible_only)
    assert all(everything[k] == v for k, v in visible_only.items())
    assert (
        len(trajectory_from_tracks(masked, 96, 64).tracks) == 4
    )  # each track split into its two visible runs

    off = {"track_path": full["track_path"].clone()}
    off["track_path"][hidden, 0, 0] = -12.0  # track 0 leaves the frame there: the same as invisible there
    per_track = torch.ones(frames, 2, dtype=torch.bool)
    per_track[hidden, 0] = False
    assert moves(off) == moves({**full, "track_visibility": per_track}) != everything

    nowhere = {**full, "track_visibility": torch.zeros(frames, 2, dtype=torch.bool)}
    with pytest.raises(
        TrajectoryFormatError, match="none of its 2 tracks.*visible and inside the 96x64 frame"
    ):
        trajectory_from_tracks(nowhere, 96, 64)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[[1, 2]]", "should be a dict with 'track_path', got str"),
        ({"points": torch.zeros(3, 1, 2)}, r"got \['points'\]"),
        ({"track_path": torch.zeros(3, 2)}, r"shape \[frames, tracks, 2\], got \[3, 2\]"),
        ({"track_path": [[[1.0, 2.0]]]}, "should be a tensor, got list"),
        (
            {"track_path": torch.zeros(4, 2, 2), "track_visibility": torch.ones(4, 3, dtype=torch.bool)},
            r"should have shape \[4, 2\] \(or \[4, 1\]\).*got \[4, 3\]",
        ),
        ({"track_path": torch.zeros(1, 2, 2)}, "has 1 frame; motion needs at least 2"),
    ],
)
def test_malformed_tracks_say_what_was_expected(value, message):
    with pytest.raises(TrajectoryFormatError, match=message):
        trajectory_from_tracks(value, 96, 64)


def test_missing_visibility_means_every_entry_is_visible():
    path, visible = read_tracks({"track_path": torch.ones(5, 3, 2)})
    assert path.shape == (5, 3, 2) and visible.shape == (5, 3) and visible.all()
