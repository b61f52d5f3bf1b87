"""The path families of the tiny Tora's clips (tora_model.tiny.path_families, synthetic.make_clips with families)."""

import numpy as np
import pytest

from tora_model.errors import ConfigError
from tora_model.resample import resample
from tora_model.tiny.path_families import (
    FAMILIES,
    LOOP_CANVAS_SCALE,
    MAX_SPEED,
    PROBE_FAMILIES,
    check_families,
    crossing,
)
from tora_model.tiny.synthetic import FRAMES, HEIGHT, WIDTH, make_clips, track_colours


def speeds(centres: np.ndarray) -> np.ndarray:
    """[N, F-1] px per frame."""
    return np.hypot(*np.diff(centres, axis=1).transpose(2, 0, 1))


def test_curves_alone_are_the_original_clips():
    original, named = make_clips(1000, 3, 1), make_clips(1000, 3, 1, ("curves",))
    for a, b in zip(original, named, strict=True):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.centres, b.centres)
        assert not a.trajectory.per_point


@pytest.mark.parametrize("family", FAMILIES[1:])
def test_each_family_is_a_per_frame_path_inside_the_frame(family):
    clips = make_clips(5, 6, 1, (family,))
    for clip in clips:
        assert clip.trajectory.per_point and len(clip.trajectory.tracks[0].points) == FRAMES
        assert np.array_equal(
            resample(clip.trajectory, FRAMES, WIDTH, HEIGHT), clip.centres
        )  # the KJNodes timing
        x, y = clip.centres[..., 0], clip.centres[..., 1]
        assert x.min() >= 7 and y.min() >= 7 and x.max() <= WIDTH - 7 and y.max() <= HEIGHT - 7
        assert speeds(clip.centres).max() <= MAX_SPEED + 0.15  # positions are rounded to 0.1 px
        tracked = track_colours(clip.frames, clip.colours)
        assert (
            np.hypot(*(tracked - clip.centres).transpose(2, 0, 1)).mean() < 0.6
        )  # the tracker's ground truth
    other = make_clips(6, 1, 1, (family,))[0]
    assert not np.array_equal(other.centres, clips[0].centres)  # another seed, other paths (held-out sets)


def test_families_carry_what_they_are_named_for():
    def still(family):
        return np.concatenate([speeds(c.centres)[0] < 1e-9 for c in make_clips(7, 8, 1, (family,))])

    fast = np.concatenate([speeds(c.centres)[0] for c in make_clips(7, 8, 1, ("fast",))])
    assert fast.mean() >= 9 and fast.max() > 12  # reflections off the border shorten a few steps
    assert still("holds").mean() > 0.4 and still("wiggles").mean() == 0
    for clip in make_clips(7, 8, 1, ("timed",)):  # a pause of two frames or more somewhere mid-path
        pauses = np.convolve(speeds(clip.centres)[0] < 1e-9, [1, 1], mode="valid")
        assert (pauses[2:-2] == 2).any()
    border = np.concatenate([c.centres[0] for c in make_clips(7, 8, 1, ("border",))])
    distance = np.minimum(
        np.minimum(border[:, 0], WIDTH - border[:, 0]), np.minimum(border[:, 1], HEIGHT - border[:, 1])
    )
    assert distance.max() <= 10.05


def test_several_objects_cross():
    clips = make_clips(8, 10, (2, 3), FAMILIES)
    assert {len(c.centres) for c in clips} == {2, 3}
    crossed = [
        all(any(crossing(c.centres[i], c.centres[j]) for j in range(i)) for i in range(1, len(c.centres)))
        for c in clips
    ]
    assert np.mean(crossed) >= 0.8


def test_unknown_family_names_the_known_ones():
    assert check_families("all") == FAMILIES and check_families("fast, holds") == ("fast", "holds")
    assert check_families(["fast", "holds"]) == ("fast", "holds")  # a sequence of names as well
    with pytest.raises(ConfigError, match="wiggles"):
        check_families("wiggle")


@pytest.mark.parametrize("family", PROBE_FAMILIES)
def test_probe_families_are_drawn_paths_never_trained_on(family):
    """Probes measure control on paths unlike any training clip: drawn tracks (not per-frame), within the speed
    limit, inside the frame — and the training refuses them, so they stay unseen."""
    clips = make_clips(11, 6, 1, (family,))
    for clip in clips:
        (track,) = clip.trajectory.tracks
        assert not clip.trajectory.per_point and len(track.points) >= 5
        assert np.allclose(resample(clip.trajectory, FRAMES, WIDTH, HEIGHT), clip.centres)
        assert speeds(clip.centres).max() <= MAX_SPEED and speeds(clip.centres).mean() > 2
        x, y = clip.centres[..., 0], clip.centres[..., 1]
        assert x.min() >= 8 and y.min() >= 8 and x.max() <= WIDTH - 8 and y.max() <= HEIGHT - 8
        tracked = track_colours(clip.frames, clip.colours)
        assert np.hypot(*(tracked - clip.centres).transpose(2, 0, 1)).mean() < 0.6
    scale = LOOP_CANVAS_SCALE if family == "loops" else 1
    assert (clip.trajectory.width, clip.trajectory.height) == (WIDTH * scale, HEIGHT * scale)
    assert check_families(family, probes=True) == (family,)
    assert (
        check_families("probes", probes=True) == PROBE_FAMILIES
        and check_families("all", probes=True) == FAMILIES
        and check_families(f"all,{family},curves", probes=True) == (*FAMILIES, family)
    )
    with pytest.raises(ConfigError, match="never trained on"):
        check_families(f"curves,{family}")
    with pytest.raises(ValueError, match="one object"):
        make_clips(11, 1, 2, (family,))


def test_loops_turn_and_scribbles_have_corners():
    for clip in make_clips(12, 8, 1, ("loops",)):
        steps = np.diff(clip.centres[0], axis=0)
        heading = np.unwrap(np.arctan2(steps[:, 1], steps[:, 0])[np.hypot(*steps.T) > 0.5])
        assert abs(heading[-1] - heading[0]) > np.pi  # more than half a turn
    for clip in make_clips(13, 8, 1, ("scribbles",)):
        points = np.array(clip.trajectory.tracks[0].points)
        legs = np.diff(points, axis=0)
        cosines = (legs[1:] * legs[:-1]).sum(-1) / np.hypot(*legs[1:].T) / np.hypot(*legs[:-1].T)
        assert clip.trajectory.tracks[0].interpolation == "linear" and cosines.min() < 0.7  # a sharp corner


def test_training_refuses_probe_families(tmp_path):
    from tora_model.tiny.train import main

    with pytest.raises(ConfigError, match="never trained on"):
        main(["denoiser", "--families", "all,loops", "--out", str(tmp_path), "--steps", "1"])
    assert not any(tmp_path.iterdir())


def test_evaluation_has_a_row_per_family_and_one_of_crossing_objects():
    from tora_model.tiny.evaluate import HELD_OUT_SEED, family_rows

    rows = family_rows(clips=2, multi_clips=3)
    assert [r.label for r in rows] == [f"{f}, 1 object" for f in FAMILIES] + ["all, 2–3 objects"]
    assert len({r.seed for r in rows}) == len(rows) and min(r.seed for r in rows) == HELD_OUT_SEED
    first = make_clips(rows[0].seed, rows[0].clips, rows[0].objects, rows[0].families)
    assert np.array_equal(
        first[1].frames, make_clips(HELD_OUT_SEED, 2, 1)[1].frames
    )  # the original held-out set
    assert (
        family_rows(("fast",), clips=2)[0].seed == rows[FAMILIES.index("fast")].seed
    )  # same clips when selected
    probes = family_rows(("fast",) + PROBE_FAMILIES, clips=2, multi_clips=3)
    assert [r.label for r in probes] == ["fast, 1 object"] + [
        f"{f}, 1 object (never trained on)" for f in PROBE_FAMILIES
    ] + ["all, 2–3 objects"]
    assert probes[-1].families == ("fast",)  # crossing objects come from training families only
    assert len({r.seed for r in rows + probes[1:-1]}) == len(rows) + len(PROBE_FAMILIES)
    assert (
        family_rows(PROBE_FAMILIES, clips=2, multi_clips=3)[-1].family == PROBE_FAMILIES[-1]
    )  # no crossing row


def test_evaluate_refuses_probes_with_several_objects():
    from tora_model.tiny.evaluate import main

    with pytest.raises(SystemExit):
        main(["--families", "loops", "--objects", "2", "--models", "/nonexistent"])


def test_an_object_that_starts_under_another_is_tracked_by_its_own_colour():
    """Two objects start at the same place (the later one drawn on top) and part: the hidden one's reference colour
    must not be read off the one covering it, or the tracker follows the wrong object on the true clip itself."""
    from tora_model.tiny.evaluate import trajectory_errors
    from tora_model.tiny.synthetic import PALETTE, Clip, background, render
    from tora_model.trajectory import Track, Trajectory

    t = np.linspace(0, 1, FRAMES)[:, None]
    start = np.array([48.0, 32.0])
    centres = np.stack([start + t * [30.0, 10.0], start - t * [30.0, 10.0]])  # [2, F, 2]
    rng = np.random.default_rng(0)
    colours = PALETTE[[0, 2]]
    frames = render(rng, centres, colours, background(rng))
    tracks = tuple(Track(points=tuple(map(tuple, c.tolist())), interpolation="linear") for c in centres)
    clip = Clip(frames, centres, colours, Trajectory(WIDTH, HEIGHT, tracks, per_point=True))
    errors, lost = trajectory_errors(frames, clip)
    # the hidden one is partly covered while they part: its visible centroid is off by a few px in those frames
    assert lost == 0 and errors.mean() < 1.0 and errors.max() < 5.0, errors.reshape(2, -1).max(axis=1)


def test_the_crossing_row_is_split_where_the_objects_first_meet():
    """`evaluate` prints, under the table, the crossing-object row's error before the objects first come within
    MEETING_PX of each other and from then on — the split that shows where several objects lose their paths."""
    from tora_model.tiny.evaluate import MEETING_PX, Errors, RowSpec, format_meeting_split, meeting_masks
    from tora_model.tiny.synthetic import Clip

    t = np.arange(FRAMES, dtype=np.float64)[:, None]  # [F, 1]
    centres = np.stack(
        [
            [10.0, 32.0] + t * [4.0, 0.0],  # meets the second one at frame 9 (gap 80 - 8 t)
            [90.0, 32.0] - t * [4.0, 0.0],
            np.broadcast_to([48.0, 8.0], (FRAMES, 2)),  # still, never within MEETING_PX of the others
        ]
    )
    clip = Clip(np.zeros((FRAMES, HEIGHT, WIDTH, 3), np.uint8), centres, np.zeros((3, 3)), None)
    met = meeting_masks(clip)  # [3, F-1], frames 1..F-1
    first = int(np.ceil((80 - MEETING_PX) / 8 + 1e-9))  # first frame with a gap below MEETING_PX: 9
    assert met.shape == (3, FRAMES - 1)
    assert not met[:2, : first - 1].any() and met[:2, first - 1 :].all()  # stays True once met, as they part
    assert not met[2].any()

    row = RowSpec("all", (2, 3), 2, 1100, FAMILIES)
    clips = make_clips(row.seed, row.clips, row.objects, row.families)
    masks = np.concatenate([meeting_masks(c).ravel() for c in clips])
    assert 0 < masks.sum() < masks.size
    values = np.where(masks, 10.0, 2.0)  # 10 px after every meeting, 2 px before
    measured = [
        (
            RowSpec("curves", 1, 2, 1000, ("curves",)),
            {"motion on": Errors(np.ones(32), 0)},
        ),  # one object: no split
        (row, {"motion on": Errors(values, 0), "motion off": Errors(values * 3, 0)}),
    ]
    lines = format_meeting_split(measured).splitlines()
    share = f"{10 * masks.sum() / values.sum():.0%}"
    assert lines == [
        f"{row.label}, motion on: before the objects meet (within 12 px) 2.00 px over {(~masks).sum()} object-frames; "
        f"from then on 10.00 px over {masks.sum()} ({share} of the error)",
        f"{row.label}, motion off: before the objects meet (within 12 px) 6.00 px over {(~masks).sum()} object-frames; "
        f"from then on 30.00 px over {masks.sum()} ({share} of the error)",
    ]
    assert format_meeting_split(measured[:1]) == ""
