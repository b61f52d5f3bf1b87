"""The shipped tiny Tora follows trajectories: held-out paths, real pipeline, colour tracking (tora_model.tiny.evaluate).

A regression anywhere in the motion path — flow rendering, VAE encoding, extractor, fusers, sampler, loaders —
makes the generated objects drift from their paths, so motion-on error rises towards the motion-off error.
"""

import numpy as np
import pytest
import torch

from tests.bundled_tiny import BUNDLED_TINY, needs_bundled_tiny
from tora_model.tiny.evaluate import HELD_OUT_SEED, evaluate, evaluate_rows, family_rows, load_tiny_tora
from tora_model.tiny.path_families import FAMILIES, PROBE_FAMILIES
from tora_model.tiny.synthetic import make_clips

CLIPS, STEPS = 4, 10
OBJECTS = 1
MAX_MEAN_ERROR_ON = 4.0  # px at 96×64; measured 1.69 on these clips (motion off: 17.32, VAE round trip: 0.86)
MIN_OFF_OVER_ON = 4.0  # measured 10.2×; a broken motion path gives ~1×

pytestmark = needs_bundled_tiny


@pytest.fixture
def one_thread():
    """One thread is both faster and deterministic on a shared 2-core CPU; restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_trained_tiny_tora_follows_held_out_paths(one_thread):
    model, vae = load_tiny_tora(BUNDLED_TINY)
    results = evaluate(model, vae, make_clips(HELD_OUT_SEED, CLIPS, OBJECTS), steps=STEPS)
    assert results["ground truth"].mean < 0.6  # the tracker itself is exact to anti-aliasing
    on, off = results["motion on"].mean, results["motion off"].mean
    assert on < MAX_MEAN_ERROR_ON, f"motion on: mean error {on:.2f} px (motion off {off:.2f} px)"
    assert off > MIN_OFF_OVER_ON * on, (
        f"motion off {off:.2f} px is not {MIN_OFF_OVER_ON}× motion on {on:.2f} px"
    )


# issue 12: one held-out clip of each other path family (wiggles, timed, fast, holds, border; one object, pooled) and
# 8 clips of 2–3 crossing objects, 10 steps as above. Measured with the shipped weights: other families 1.64 px on,
# 21.73 off (13.3×; VAE round trip 1.19); crossing objects 12.81 on, 24.52 off (1.9×). Crossing-object clips range
# from 3 to 22 px each, so 3 clips (the earlier count) moved the pooled figure by 2 px between two weights whose 12
# held-out clips differ by 0.6 px the other way; 8 hold it steadier. The bounds leave room for other CPUs'
# arithmetic; the 2–3-object target (4 px and 3×) is not reached yet.
FAMILY_CLIPS, MULTI_CLIPS = 1, 8
MAX_FAMILIES_ON, MIN_FAMILIES_RATIO = 5.5, 4.0
MAX_MULTI_ON, MIN_MULTI_RATIO = 16.0, 1.5


def pooled_means(parts: list[dict]) -> tuple[float, float]:
    """(motion on, motion off) mean error over all object-frames of `parts` (evaluate's results per row)."""
    return tuple(
        float(np.concatenate([p[row].values for p in parts]).mean()) for row in ("motion on", "motion off")
    )


def test_trained_tiny_tora_follows_other_path_families_and_crossing_objects(one_thread):
    model, vae = load_tiny_tora(BUNDLED_TINY)
    rows = family_rows(FAMILIES[1:], clips=FAMILY_CLIPS, multi_clips=MULTI_CLIPS)
    measured = evaluate_rows(model, vae, rows, steps=STEPS)
    for parts, max_on, min_ratio, what in (
        (
            [r for row, r in measured if row.objects == 1],
            MAX_FAMILIES_ON,
            MIN_FAMILIES_RATIO,
            "other families",
        ),
        (
            [r for row, r in measured if row.objects != 1],
            MAX_MULTI_ON,
            MIN_MULTI_RATIO,
            "2–3 crossing objects",
        ),
    ):
        on, off = pooled_means(parts)
        assert on < max_on, f"{what}: motion on {on:.2f} px (motion off {off:.2f} px)"
        assert off > min_ratio * on, (
            f"{what}: motion off {off:.2f} px is not {min_ratio}× motion on {on:.2f} px"
        )


# Paths drawn as users draw them but never trained on (path_families.PROBE_FAMILIES: loops on a 5× canvas,
# scribbles with sharp corners), 2 held-out clips of each, 10 steps. Measured with the shipped weights: 1.50 px on,
# 21.76 off (14.5×; VAE round trip 1.16). The one-object target (3 px, 4×) with room for other CPUs.
PROBE_CLIPS = 2
MAX_PROBES_ON, MIN_PROBES_RATIO = 4.0, 4.0


def test_trained_tiny_tora_follows_drawn_paths_it_never_trained_on(one_thread):
    model, vae = load_tiny_tora(BUNDLED_TINY)
    rows = family_rows(PROBE_FAMILIES, clips=PROBE_CLIPS, multi_clips=0)
    measured = evaluate_rows(model, vae, rows, steps=STEPS)
    assert [row.family for row, _ in measured] == list(PROBE_FAMILIES)
    on, off = pooled_means([r for _, r in measured])
    assert on < MAX_PROBES_ON, f"unseen drawn paths: motion on {on:.2f} px (motion off {off:.2f} px)"
    assert off > MIN_PROBES_RATIO * on, (
        f"unseen drawn paths: motion off {off:.2f} px is not {MIN_PROBES_RATIO}× {on:.2f} px"
    )
