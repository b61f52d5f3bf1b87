"""The tiny denoiser's stage (`tora_model.tiny.train`): its object-weighted loss — where the objects are per latent
cell (`object_cells`) and the weighted error (`weighted_mse`) — and the flow spreading it trains on and stores."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.bundled_tiny import BUNDLED_TINY, needs_bundled_tiny
from tora_model.st_dit import load_st_transformer, save_st_transformer
from tora_model.tiny.synthetic import make_clips
from tora_model.tiny.train import clip_pixels, encode_dataset, object_cells, train_denoiser, weighted_mse
from tora_model.vae_loading import load_vae


def _clip_with_square(frames: int = 9, shown: range = range(9)) -> np.ndarray:
    """uint8 [F, 32, 48, 3]: a grey background, a saturated red 4×4 square on pixels 8..11 × 20..23 in `shown`."""
    video = np.full((frames, 32, 48, 3), 120, dtype=np.uint8)
    for f in shown:
        video[f, 8:12, 20:24] = (220, 30, 30)
    return video


def test_object_cells_mark_the_cells_the_object_covers_and_their_neighbours_only():
    cells = object_cells(_clip_with_square())  # [3, 8, 12]: latents 0, 1 (frames 1..4), 2 (frames 5..8)
    assert cells.shape == (3, 8, 12)
    expected = torch.zeros(8, 12)
    expected[1:4, 4:7] = 1  # the square fills cell (2, 5); one cell around it counts too
    for t in range(3):
        torch.testing.assert_close(cells[t], expected)


def test_object_cells_group_frames_as_the_causal_vae_does():
    """Latent 0 is frame 0 alone, latent t >= 1 frames 4t-3..4t: an object shown only in frame 5 lands in latent 2."""
    cells = object_cells(_clip_with_square(shown=range(5, 6)))
    assert cells[0].max() == 0 and cells[1].max() == 0
    assert cells[2, 2, 5] == 1


def test_object_cells_refuse_a_clip_the_vae_cannot_group():
    with pytest.raises(ValueError, match="expected 1 \\+ 4·k frames .* got 8 frames of 32×48"):
        object_cells(_clip_with_square(frames=8, shown=range(8)))
    with pytest.raises(ValueError, match="divisible by 4, got 9 frames of 32×46"):
        object_cells(_clip_with_square()[:, :, :46])


def test_object_cells_of_synthetic_clips_cover_the_objects_but_not_the_textured_background():
    clip = make_clips(5, 1, num_objects=1)[0]
    cells = object_cells(clip.frames)  # [5, 16, 24]
    for t, frame in enumerate((0, 4, 8, 12, 16)):
        x, y = clip.centres[0, frame]
        assert cells[t, int(y) // 4, int(x) // 4] == 1
    assert 0 < cells.mean() < 0.2  # one object of radius <= 8 px: a small part of the 16×24 cells


def test_weighted_mse_with_a_constant_weight_is_the_plain_mse():
    generator = torch.Generator().manual_seed(0)
    prediction, target = (
        torch.randn(2, 5, 16, 4, 6, generator=generator),
        torch.randn(2, 5, 16, 4, 6, generator=generator),
    )
    torch.testing.assert_close(
        weighted_mse(prediction, target, torch.full((2, 5, 1, 4, 6), 3.0)), F.mse_loss(prediction, target)
    )


def test_weighted_mse_makes_an_error_on_object_cells_cost_more_than_the_same_error_on_background():
    target = torch.zeros(1, 2, 16, 4, 6)
    objects = torch.zeros(1, 2, 1, 4, 6)
    objects[..., 1, 1] = 1
    on_object, on_background = target.clone(), target.clone()
    on_object[..., 1, 1] = 0.5
    on_background[..., 3, 4] = 0.5
    weight = 1 + 10 * objects
    assert F.mse_loss(on_object, target) == F.mse_loss(on_background, target)
    assert weighted_mse(on_object, target, weight) > 5 * weighted_mse(on_background, target, weight)


@needs_bundled_tiny
def test_the_denoiser_stage_trains_on_flow_spread_with_the_sigma_it_stores(tmp_path):
    """`--flow-sigma`: the clips' flow videos are spread with it and the saved weights' header names it, so inference
    (`motion_from_trajectory`, the motion node) spreads the same way; without it the resumed weights' σ is kept."""
    vae = load_vae(BUNDLED_TINY / "vae")
    clips = make_clips(5, 2, families=("curves", "fast"))
    data = encode_dataset(vae, clips, flow_sigma=3.0)
    with torch.no_grad():
        expected = vae.encode_chunk(torch.cat([clip_pixels(c.flow_video(3.0)) for c in clips]))[0]
        release = vae.encode_chunk(torch.cat([clip_pixels(c.flow_video()) for c in clips]))[0]
    torch.testing.assert_close(data["flow"], expected, rtol=0, atol=0)
    assert (data["flow"] - release).abs().max() > 0.1  # σ = 3 is not the release's σ = 10
    model = train_denoiser(vae, seed=0, minutes=5, num_clips=2, batch=1, steps=1, flow_sigma=3.0)
    save_st_transformer(model, tmp_path / "transformer.safetensors")
    resumed = load_st_transformer(tmp_path / "transformer.safetensors")
    assert resumed.config.flow_sigma == 3.0
    kept = train_denoiser(vae, seed=0, minutes=5, num_clips=2, batch=1, steps=1, init=resumed)
    assert kept.config.flow_sigma == 3.0


def test_dense_flow_carries_each_visible_object_pixels_move():
    """`--dense-flow` (the paper's first stage): frame f + 1 holds, on exactly the pixels object i covers in frame f,
    its move f → f + 1; where one object hides another the top one's move wins; background and frame 0 stay zero."""
    from tora_model.tiny.synthetic import (
        HEIGHT,
        PALETTE,
        WIDTH,
        Clip,
        background,
        dense_flow,
        object_masks,
        render,
    )
    from tora_model.trajectory import Track, Trajectory

    t = np.linspace(0, 1, 17)[:, None]
    centres = np.stack(
        [[20.0, 32.0] + t * [56.0, 0.0], [76.0, 32.0] - t * [56.0, 8.0]]
    )  # [2, F, 2], they cross
    rng = np.random.default_rng(1)
    colours = PALETTE[[0, 2]]
    frames = render(rng, centres, colours, background(rng))
    tracks = tuple(Track(points=tuple(map(tuple, c.tolist())), interpolation="linear") for c in centres)
    clip = Clip(frames, centres, colours, Trajectory(WIDTH, HEIGHT, tracks, per_point=True))
    flow = dense_flow(clip)  # [F, H, W, 2]
    masks = object_masks(frames, colours)  # [2, F, H, W]
    assert flow.shape == (17, HEIGHT, WIDTH, 2) and not flow[0].any()
    for f in range(16):
        for i in range(2):
            move = (centres[i, f + 1] - centres[i, f]).astype(np.float32)
            np.testing.assert_array_equal(
                flow[f + 1][masks[i, f]], np.broadcast_to(move, (masks[i, f].sum(), 2))
            )
        assert not flow[f + 1][~masks[:, f].any(0)].any()
    hidden = masks[0, 8] & (
        np.hypot(*(np.mgrid[0:HEIGHT, 0:WIDTH][::-1] + 0.5 - centres[1, 8][:, None, None])) < 3
    )
    assert not hidden.any(), "at the crossing the later (blue) object is drawn on top and hides the red one"
    assert (
        masks[1, 8].sum() > 50
        and (flow[9][masks[1, 8]] == (centres[1, 9] - centres[1, 8]).astype(np.float32)).all()
    )


@needs_bundled_tiny
def test_the_denoiser_stage_encodes_dense_flow_when_asked():
    vae = load_vae(BUNDLED_TINY / "vae")
    clips = make_clips(6, 2, families=("fast", "wiggles"))
    data = encode_dataset(vae, clips, dense_flow=True)
    with torch.no_grad():
        expected = vae.encode_chunk(torch.cat([clip_pixels(c.dense_flow_video()) for c in clips]))[0]
        paths = vae.encode_chunk(torch.cat([clip_pixels(c.flow_video()) for c in clips]))[0]
    torch.testing.assert_close(data["flow"], expected, rtol=0, atol=0)
    assert (data["flow"] - paths).abs().max() > 0.1
