"""Synthetic clips for the tiny Tora: deterministic, centres = the inference resampling, tracker accurate on them."""

import numpy as np

from tora_model.flow import flow_to_rgb, render_flow
from tora_model.resample import resample
from tora_model.tiny.synthetic import FRAMES, HEIGHT, WIDTH, make_clips, track_colours


def test_clips_are_deterministic_and_centres_are_the_inference_positions():
    first, again = make_clips(5, 3), make_clips(5, 3)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.centres, b.centres)
        assert a.frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and a.frames.dtype == np.uint8
        np.testing.assert_array_equal(a.centres, resample(a.trajectory, FRAMES, WIDTH, HEIGHT, "smooth"))
        np.testing.assert_array_equal(a.flow_video(), flow_to_rgb(render_flow(a.centres, HEIGHT, WIDTH)))
    assert not np.array_equal(make_clips(6, 1)[0].frames, first[0].frames)


def test_colour_tracker_finds_the_ground_truth_centres():
    clips = make_clips(11, 12, num_objects=1)
    errors = np.concatenate(
        [
            np.hypot(*(track_colours(c.frames, c.colours) - c.centres).transpose(2, 0, 1)).ravel()
            for c in clips
        ]
    )
    assert not np.isnan(errors).any()
    assert errors.mean() < 0.6 and errors.max() < 1.5  # anti-aliased edges only; 0.3 px mean measured
    moved = [np.abs(c.centres[:, -1] - c.centres[:, 0]).max() for c in clips]
    assert min(moved) > 5  # every clip really moves
