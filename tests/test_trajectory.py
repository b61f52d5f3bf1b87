"""Trajectory parsers (JSON v1, official .txt, KJNodes strings) and the resampler, against the reference fixture.

Official processing must reproduce alibaba/Tora read_points + process_points + int(W*x/256) bit for bit
(reference/fixtures/tora_reference_values.json, spec §2.2); every parser error names track, point and field.
"""

import json
import re

import numpy as np
import pytest

from tests.shared_data import FIXTURE, TRAJS, needs_shared
from tora_model.errors import ConfigError, TrajectoryFormatError
from tora_model.resample import canvas_positions, check_num_frames, resample
from tora_model.trajectory import (
    Track,
    Trajectory,
    load_official_txt,
    load_trajectory_file,
    parse_kjnodes_coordinates,
    parse_official_txt,
    trajectory_from_json,
)


def _reference():
    return json.loads(FIXTURE.read_text())["trajectories_480x720_49frames"]


def _track(points, **kw):
    base = {"kind": "path", "points": points, "interpolation": "smooth", "start_frame": 0, "end_frame": None}
    return {**base, "easing": "linear", **kw}


def _doc(*tracks, width=720, height=480, **top):
    return {"version": 1, "width": width, "height": height, "tracks": list(tracks), **top}


# ------------------------------------------------------------------------------------------------ official


@needs_shared
@pytest.mark.parametrize("name", sorted(p.name for p in TRAJS.glob("*.txt")) if TRAJS.exists() else [])
def test_official_points_equal_reference(name):
    ref = _reference()[name]
    traj = load_official_txt(TRAJS / name)
    assert traj.official and len(traj.tracks[0].points) == ref["raw_points"]
    pixels = resample(traj, 49, 720, 480)  # official mode is the default for .txt trajectories
    assert pixels.shape == (1, 49, 2)
    np.testing.assert_array_equal(pixels[0], ref["points_pixels_xy"])
    # On a 256x256 target the scaling is the identity: the processed 256-canvas points.
    np.testing.assert_array_equal(resample(traj, 49, 256, 256)[0], ref["points_256_canvas"])


@needs_shared
def test_official_several_files_are_several_tracks():
    ref = _reference()
    traj = load_official_txt([TRAJS / "circle.txt", TRAJS / "wave.txt"])
    out = resample(traj, 49, 720, 480, mode="official")
    np.testing.assert_array_equal(out[1], ref["wave.txt"]["points_pixels_xy"])


def test_official_processing_rules_at_other_frame_counts():
    # 3 points -> 13 frames: 10 inserts over 2 intervals (5 each); 4 points -> 9: 5 inserts, front-loaded 2,2,1.
    traj = parse_official_txt("0,0\n12,6\n24,0\n")
    out = resample(traj, 13, 256, 256)[0]
    assert out[:, 0].tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24]
    traj = parse_official_txt("0,0\n9,0\n18,0\n21,0")
    assert resample(traj, 9, 256, 256)[0, :, 0].tolist() == [0, 3, 6, 9, 12, 15, 18, 19, 21]
    # More points than frames: stride floor(len/F), then the first F (the end is dropped, as the reference does).
    traj = parse_official_txt("\n".join(f"{i},0" for i in range(23)))
    assert resample(traj, 5, 256, 256)[0, :, 0].tolist() == [0, 4, 8, 12, 16]
    # Truncation toward zero of the inserted points, then of the pixel scaling.
    traj = parse_official_txt("10,10\n0,0")
    assert resample(traj, 5, 256, 256)[0, :, 0].tolist() == [10, 7, 5, 2, 0]
    assert resample(traj, 5, 720, 480)[0, 1].tolist() == [int(720 * 7 / 256), int(480 * 7 / 256)]


def test_official_single_point_is_a_hold_not_512():
    traj = parse_official_txt("100,200\n")
    assert traj.tracks[0].kind == "hold"
    out = resample(traj, 9, 720, 480)
    assert (out == [int(720 * 100 / 256), int(480 * 200 / 256)]).all()


def test_official_txt_syntax_accepted():
    text = "\ufeff81, 112\r\n\r\n 86 ,112 \n\t92,\t113\n\n"
    assert parse_official_txt(text).tracks[0].points == ((81, 112), (86, 112), (92, 113))


@pytest.mark.parametrize(
    "text,match",
    [
        ("1,2\n1.5,2\n", "line 2 (point 1): expected integers"),
        ("1,2\nabc\n", "line 2 (point 1)"),
        ("1,2,3\n", "line 1 (point 0)"),
        ("1;2\n", "line 1 (point 0)"),
        ("+1,2\n", "line 1 (point 0)"),
        ("1,2\n\n256,0\n", "line 3 (point 1), field 'x': 256 is outside"),
        ("1,-1\n", "line 1 (point 0), field 'y': -1 is outside"),
        ("", "holds no points"),
        ("\n \n", "holds no points"),
    ],
)
def test_official_txt_errors(text, match):
    with pytest.raises(TrajectoryFormatError, match=re.escape(match)) as info:
        parse_official_txt(text, ["walk.txt"])
    assert "walk.txt (track 0)" in str(info.value)


def test_official_mode_refuses_what_it_cannot_reproduce():
    drawn = trajectory_from_json(_doc(_track([[0, 0], [100, 100]])))
    with pytest.raises(TrajectoryFormatError, match="256x256 canvas"):
        resample(drawn, 49, 720, 480, mode="official")
    fractional = trajectory_from_json(
        _doc(_track([[0, 0], [10.5, 3]], interpolation="linear"), width=256, height=256)
    )
    with pytest.raises(TrajectoryFormatError, match=re.escape("track 0, point 1, field 'x'")):
        resample(fractional, 49, 720, 480, mode="official")
    timed = trajectory_from_json(
        _doc(_track([[0, 0], [10, 3]], interpolation="linear", start_frame=2), width=256, height=256)
    )
    with pytest.raises(TrajectoryFormatError, match="timing"):
        resample(timed, 49, 720, 480, mode="official")
    with pytest.raises(TrajectoryFormatError, match="official"):
        Trajectory(256, 256, (Track(((0, 0), (255.5, 1))),), official=True)
    # The same official trajectory may still be resampled smoothly on request.
    smooth = resample(parse_official_txt("0,0\n128,0"), 5, 512, 256, mode="smooth")
    np.testing.assert_allclose(smooth[0, :, 0], [0, 64, 128, 192, 256])


def test_missing_file_error_names_the_file(tmp_path):
    with pytest.raises(TrajectoryFormatError, match="nope.txt"):
        load_official_txt(tmp_path / "nope.txt")
    with pytest.raises(TrajectoryFormatError, match=r"\.json .* or \.txt"):
        load_trajectory_file(tmp_path / "a.csv")


def test_load_trajectory_file_dispatches_on_extension(tmp_path):
    (tmp_path / "a.txt").write_text("1,2\n3,4\n")
    (tmp_path / "a.json").write_text(json.dumps(_doc(_track([[1, 2], [3, 4]]))))
    assert load_trajectory_file(tmp_path / "a.txt").official
    assert load_trajectory_file(tmp_path / "a.json").width == 720


# ------------------------------------------------------------------------------------------------ JSON v1


def test_json_round_trip_keeps_everything():
    doc = _doc(
        _track(
            [[0, 0], [720, 480], [10.25, 3.5]],
            easing="ease-in-out",
            start_frame=3,
            end_frame=40,
            name="ball",
            color="#ff8800",
        ),  # fmt: skip
        _track([[5, 5]], kind="hold", interpolation="linear"),
    )
    traj = trajectory_from_json(json.dumps(doc))
    assert traj.to_json() == json.loads(json.dumps(doc))
    assert trajectory_from_json(traj.to_json_string()) == traj == Trajectory.from_json(doc)
    assert traj.tracks[0].points[2] == (10.25, 3.5)


def test_json_accepts_integral_floats_like_js():
    traj = trajectory_from_json(_doc(_track([[0, 0], [1, 1]], start_frame=2.0, end_frame=9.0), width=720.0))
    assert (traj.width, traj.tracks[0].start_frame, traj.tracks[0].end_frame) == (720, 2, 9)
    assert isinstance(traj.width, int) and isinstance(traj.tracks[0].start_frame, int)


P2 = [[0, 0], [10, 10]]
JSON_ERRORS = [
    ({**_doc(_track(P2)), "version": 2}, "unsupported trajectory version 2; this pack reads version 1"),
    ({**_doc(_track(P2)), "version": "1"}, "unsupported trajectory version '1'"),
    ({**_doc(_track(P2)), "version": True}, "unsupported trajectory version True"),
    ({"width": 1, "height": 1, "tracks": []}, "unsupported trajectory version None"),
    ({**_doc(_track(P2)), "fps": 8}, "unknown key(s) 'fps'"),
    ({"version": 1, "width": 720, "tracks": []}, "missing key(s) height"),
    (_doc(_track(P2), width=0), "width: expected a positive integer, got 0"),
    (_doc(_track(P2), height=1.5), "height: expected a positive integer, got 1.5"),
    (_doc(_track(P2), width=True), "width: expected a positive integer, got True"),
    (_doc(), "at least one track"),
    ({**_doc(), "tracks": {"a": 1}}, "tracks: expected a list"),
    (_doc([1, 2]), "track 0: expected an object"),
    (_doc({**_track(P2), "speed": 2}), "track 0: unknown key(s) 'speed'"),
    (_doc({k: v for k, v in _track(P2).items() if k != "easing"}), "track 0: missing key(s) easing"),
    (_doc(_track(P2), _track(P2, kind="move")), "track 1, field 'kind'"),
    (_doc(_track(P2, interpolation="cubic")), "track 0, field 'interpolation'"),
    (_doc(_track(P2, easing="bounce")), "track 0, field 'easing'"),
    (_doc(_track(P2, kind="hold")), "track 0, field 'points': a \"hold\" track needs exactly 1 point, got 2"),
    (_doc(_track([[1, 1]])), "track 0, field 'points': a \"path\" track needs at least 2 points, got 1"),
    (_doc(_track("0,0 1,1")), "track 0, field 'points'"),
    (_doc(_track([[0, 0], [1, 1, 1]])), "track 0, point 1: expected [x, y]"),
    (_doc(_track([[0, 0], {"x": 1, "y": 1}])), "track 0, point 1: expected [x, y]"),
    (_doc(_track([[0, 0], ["1", 1]])), "track 0, point 1, field 'x': expected a finite number"),
    (_doc(_track([[0, 0], [1, True]])), "track 0, point 1, field 'y': expected a finite number"),
    (_doc(_track([[0, 0], [1, float("nan")]])), "track 0, point 1, field 'y': expected a finite number"),
    (_doc(_track([[0, 0], [10**400, 1]])), "track 0, point 1, field 'x': expected a finite number"),
    (
        _doc(_track([[0, 0], [720.001, 1]])),
        "track 0, point 1, field 'x': 720.001 is outside the canvas [0, 720]",
    ),
    (
        _doc(_track(P2), _track([[0, 0], [3, -0.5]])),
        "track 1, point 1, field 'y': -0.5 is outside the canvas",
    ),
    (_doc(_track(P2, start_frame=-1)), "track 0, field 'start_frame': expected an integer >= 0, got -1"),
    (_doc(_track(P2, start_frame=1.5)), "track 0, field 'start_frame': expected an integer >= 0, got 1.5"),
    (
        _doc(_track(P2, start_frame=4, end_frame=4)),
        "track 0, field 'end_frame': expected null or an integer > start_frame (4)",
    ),
    (_doc(_track(P2, end_frame="last")), "track 0, field 'end_frame'"),
    (_doc(_track(P2, color="red")), "track 0, field 'color'"),
    (_doc(_track(P2, name=3)), "track 0, field 'name'"),
    ([1, 2], "expected a JSON object"),
]


@pytest.mark.parametrize("doc,match", JSON_ERRORS, ids=[m[:40] for _, m in JSON_ERRORS])
def test_json_errors(doc, match):
    with pytest.raises(TrajectoryFormatError, match=re.escape(match)):
        trajectory_from_json(doc)


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"version": 1, "width": 720', "not valid JSON"),
        ('{"version": 1, "width": NaN, "height": 1, "tracks": []}', "non-finite number NaN"),
        ("{'version': 1}", "single quotes are not JSON"),
    ],
)
def test_json_text_errors(text, match):
    with pytest.raises(TrajectoryFormatError, match=re.escape(match)):
        trajectory_from_json(text)


# ------------------------------------------------------------------------------------------------ KJNodes


def _kj(*points):
    return [{"x": x, "y": y} for x, y in points]


def test_kjnodes_all_shapes():
    a, b, c = _kj((0, 0), (10, 5)), _kj((1, 1), (2, 2), (3, 3)), _kj((7, 7), (7, 7))
    one = parse_kjnodes_coordinates(json.dumps(a), 20, 10)
    assert one.tracks == (Track(((0, 0), (10, 5)), interpolation="linear"),) and (one.width, one.height) == (
        20,
        10,
    )
    many = parse_kjnodes_coordinates(json.dumps([a, b]), 20, 10)
    assert [len(t.points) for t in many.tracks] == [2, 3]
    listed = parse_kjnodes_coordinates([json.dumps(a), json.dumps([b, c])], 20, 10)
    assert [t.kind for t in listed.tracks] == ["path", "path", "hold"]
    assert listed.tracks[2].points == ((7, 7),)
    # No guessing by length: a short single string and a list of twelve strings both parse as what they are.
    assert len(parse_kjnodes_coordinates(json.dumps(_kj((1, 1))), 20, 10).tracks) == 1
    assert len(parse_kjnodes_coordinates([json.dumps(a)] * 12, 20, 10).tracks) == 12
    # Floats, far-edge points and tuples of strings are fine too.
    edge = parse_kjnodes_coordinates((json.dumps(_kj((20, 10), (0.5, 9.75))),), 20, 10)
    assert edge.tracks[0].points == ((20.0, 10.0), (0.5, 9.75))


@pytest.mark.parametrize(
    "coords,match",
    [
        ("[{'x': 1, 'y': 2}]", "single quotes are not JSON"),
        ('[{"x": 1}]', "track 0, point 0: expected exactly the keys"),
        ('[{"x": 1, "y": 2, "z": 0}]', "track 0, point 0: expected exactly the keys"),
        ('[{"x": 1, "y": 2}, {"x": "3", "y": 2}]', "track 0, point 1, field 'x': expected a finite number"),
        (
            '[[{"x": 1, "y": 2}], [{"x": 1, "y": 2}, {"x": 21, "y": 2}]]',
            "track 1, point 1, field 'x': 21.0 is outside",
        ),
        (
            '[{"x": 1, "y": 2}, {"x": 1, "y": 11}]',
            "track 0, point 1, field 'y': 11.0 is outside the canvas [0, 10]",
        ),
        ("[]", "expected a non-empty list"),
        ("[[]]", "track 0: an empty list of points"),
        ('[{"x": 1, "y": 2}, [{"x": 1, "y": 2}]]', "mixed list"),
        ('{"x": 1, "y": 2}', "expected a non-empty list"),
        ([], "expected a JSON string or a non-empty list"),
        (['[{"x": 1, "y": 2}]', 5], "coordinates string 1: expected a JSON string, got int"),
        ("1,2\n3,4", "not valid JSON"),
    ],
)
def test_kjnodes_errors(coords, match):
    with pytest.raises(TrajectoryFormatError, match=re.escape(match)):
        parse_kjnodes_coordinates(coords, 20, 10)


def _kj_resample(points, frames, size=(720, 480), **kw):
    traj = parse_kjnodes_coordinates(json.dumps(_kj(*points)), 720, 480)
    return resample(traj, frames, *size, **kw)[0]


def test_kjnodes_per_frame_samples_are_the_frames():
    # 49 unevenly spaced samples (accelerating, two decimals like the SplineEditor) on a 720x480 editor.
    points = [(round(12.5 + 0.27 * f * f, 2), round(400 - 3.13 * f, 2)) for f in range(49)]
    traj = parse_kjnodes_coordinates(json.dumps(_kj(*points)), 720, 480)
    assert traj.per_point and not traj.official
    out = resample(traj, 49, 720, 480)[0]  # auto mode: per point
    assert out.tolist() == [list(p) for p in points]
    # At twice the size every frame is the sample doubled, far-edge exactness as in smooth mode.
    np.testing.assert_allclose(resample(traj, 49, 1440, 960)[0], np.multiply(points, 2), rtol=1e-15)
    # An explicit mode still overrides: arc-length timing spreads the same path at constant speed.
    smooth = resample(traj, 49, 720, 480, mode="smooth")[0]
    assert smooth[0].tolist() == [12.5, 400.0] and smooth[-1].tolist() == [634.58, 249.76]
    steps, smooth_steps = (np.hypot(*np.diff(pos, axis=0).T) for pos in (out, smooth))
    assert steps[0] < 3.2 and steps[-1] > 25.8 and np.ptp(smooth_steps) < 0.25  # chords on the bend
    assert smooth[24, 0] - out[24, 0] > 100  # at mid-clip the constant-speed dot is far ahead


def test_kjnodes_pause_stays_on_its_frames():
    # x 100 -> 290 over frames 0..19, a pause at 300 on frames 20..29, then 310 -> 490 on frames 30..48.
    xs = [100 + 10 * f for f in range(20)] + [300] * 10 + [310 + 10 * k for k in range(19)]
    out = _kj_resample([(x, 240) for x in xs], 49)
    assert out[:, 0].tolist() == xs and (out[:, 1] == 240).all()
    assert (out[20:30, 0] == 300).all() and out[19, 0] == 290 and out[30, 0] == 310
    # Arc length would have no pause: its frames 20..29 all differ.
    smooth = _kj_resample([(x, 240) for x in xs], 49, mode="smooth")
    assert len(set(smooth[20:30, 0].tolist())) == 10
    # Fewer samples than frames: 13 samples over 49 frames is 4 frames per sample, uniformly (no front-loading);
    # the pause between samples 4..6 covers frames 16..24 exactly.
    short = [0, 10, 20, 30, 40, 40, 40, 50, 60, 70, 80, 90, 100]
    out = _kj_resample([(x, 5) for x in short], 49)
    np.testing.assert_array_equal(out[::4, 0], short)
    np.testing.assert_allclose(out[:17, 0], np.arange(17) * 2.5, rtol=0, atol=1e-12)
    assert (out[16:25, 0] == 40).all() and out[15, 0] < 40 < out[25, 0]
    np.testing.assert_allclose(np.diff(out[24:, 0]), 2.5, rtol=0, atol=1e-12)


def test_kjnodes_more_samples_than_frames_keep_both_ends():
    # 60 samples for 49 frames: u = f*59/48, nothing dropped (the official stride would stop at x 490).
    xs = [10.0 + 10 * k for k in range(60)]
    out = _kj_resample([(x, 100) for x in xs], 49)
    assert out[0].tolist() == [10.0, 100.0] and out[-1].tolist() == [600.0, 100.0]
    np.testing.assert_allclose(out[:, 0], 10 + 10 * np.arange(49) * 59 / 48, rtol=0, atol=1e-9)
    # Uneven samples: frame 24 sits at index 29.5, halfway between samples 29 and 30.
    xs = [k * k / 10 for k in range(60)]
    out = _kj_resample([(x, 100) for x in xs], 49)
    assert out[24, 0] == pytest.approx((29**2 + 30**2) / 20, abs=1e-12) and out[-1, 0] == xs[-1]


def test_kjnodes_hold_and_far_edge():
    # The editor's single point repeats one sample: a hold, here on the far corner, which maps onto the far edge.
    traj = parse_kjnodes_coordinates(json.dumps(_kj((20, 10), (20, 10), (20, 10))), 20, 10)
    out = resample(traj, 9, 720, 480)
    assert traj.tracks[0].kind == "hold" and (out == [720, 480]).all()
    edge = parse_kjnodes_coordinates(json.dumps(_kj((0, 0), (20, 10))), 20, 10)
    assert resample(edge, 5, 720, 480)[0].tolist() == [[0, 0], [180, 120], [360, 240], [540, 360], [720, 480]]


def test_per_point_refuses_what_it_cannot_time():
    drawn = trajectory_from_json(_doc(_track([[0, 0], [100, 100]])))
    with pytest.raises(TrajectoryFormatError, match="track 0: per-point processing has no interpolation"):
        resample(drawn, 49, 720, 480, mode="per_point")
    with pytest.raises(TrajectoryFormatError, match="per-point processing"):
        Trajectory(720, 480, (Track(((0, 0), (1, 1))),), per_point=True)
    with pytest.raises(TrajectoryFormatError, match="not both"):
        Trajectory(
            256, 256, (Track(((0, 0), (1, 1)), interpolation="linear"),), official=True, per_point=True
        )
    # A linear untimed JSON trajectory may be timed per point on request: 3 points over 5 frames.
    linear = trajectory_from_json(_doc(_track([[0, 0], [100, 0], [100, 40]], interpolation="linear")))
    assert not linear.per_point
    out = resample(linear, 5, 720, 480, mode="per_point")[0]
    assert out.tolist() == [[0, 0], [50, 0], [100, 0], [100, 20], [100, 40]]


# ------------------------------------------------------------------------------------------------ resample


@pytest.mark.parametrize(
    "frames,nearest", [(48, "45 or 49"), (50, "49 or 53"), (3, "5"), (0, "5"), (-7, "5")]
)
def test_num_frames_must_be_4k_plus_1(frames, nearest):
    with pytest.raises(ConfigError, match=f"nearest valid: {nearest}$"):
        check_num_frames(frames)


@pytest.mark.parametrize("frames", [49.0, "49", True, None])
def test_num_frames_must_be_an_integer(frames):
    with pytest.raises(ConfigError, match="4k\\+1"):
        check_num_frames(frames)


def test_resample_settings_errors():
    traj = trajectory_from_json(_doc(_track(P2)))
    with pytest.raises(ConfigError, match="width must be a positive integer"):
        resample(traj, 49, 0, 480)
    with pytest.raises(ConfigError, match="mode must be one of"):
        resample(traj, 49, 720, 480, mode="fast")
    late = trajectory_from_json(_doc(_track(P2, start_frame=3, end_frame=49)))
    with pytest.raises(
        TrajectoryFormatError, match=re.escape("track 0, field 'end_frame': 49 must be < num_frames (49)")
    ):
        resample(late, 49, 720, 480)
    idle = trajectory_from_json(_doc(_track(P2, start_frame=8)))
    with pytest.raises(TrajectoryFormatError, match=re.escape("track 0, field 'start_frame': 8 must be <")):
        resample(idle, 9, 720, 480)


def test_smooth_rescale_is_float_and_edge_exact():
    traj = trajectory_from_json(
        _doc(_track([[0, 0], [700, 480]], interpolation="linear"), width=700, height=480)
    )
    canvas = canvas_positions(traj, 9)
    out = resample(traj, 9, 720, 480)
    np.testing.assert_allclose(out, canvas * [720 / 700, 1.0], rtol=1e-15)
    assert out[0, -1].tolist() == [720.0, 480.0] and out.dtype == np.float64
    np.testing.assert_allclose(out[0, :, 0], np.linspace(0, 720, 9), rtol=1e-12)
