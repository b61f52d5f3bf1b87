"""The tiny VAE's training loss (`tora_model.tiny.train.vae_loss`): the object weighting and the ghost weighting;
and the decoder stage's data (clips, with or without their flow videos)."""

import pytest
import torch

from tora_model.tiny.synthetic import make_clips
from tora_model.tiny.train import _vae_data, clip_pixels, main, vae_loss


def _clip() -> torch.Tensor:
    """[1, 3, 2, 8, 8] in [-1, 1]: a grey background with a saturated red square in the top-left corner."""
    video = torch.full((1, 3, 2, 8, 8), -0.2)
    video[:, :, :, :3, :3] = torch.tensor([0.9, -0.8, -0.8]).view(1, 3, 1, 1, 1)
    return video


def test_without_ghost_weight_the_loss_is_the_object_weighted_l1_plus_mse():
    video = _clip()
    recon = video + 0.1 * torch.randn(video.shape, generator=torch.Generator().manual_seed(0))
    saturation = (video.amax(1, keepdim=True) - video.amin(1, keepdim=True)) / 2
    weight = 1 + 10 * saturation
    expected = (weight * (recon - video).abs()).mean() / weight.mean() + ((recon - video) ** 2).mean()
    torch.testing.assert_close(vae_loss(recon, video), expected)


def test_ghost_weight_makes_a_coloured_trail_cost_more_than_a_grey_error_of_the_same_size():
    """Both reconstructions err by 0.5 per channel on the same background pixels (same L1 and MSE): the grey one
    only lightens them, the other paints a red trail there — the error that moves a tracker's centroid."""
    video = _clip()
    grey, trail = video.clone(), video.clone()
    grey[:, :, :, 5:, 5:] += 0.5
    trail[:, :, :, 5:, 5:] += torch.tensor([0.5, -0.5, -0.5]).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(vae_loss(grey, video), vae_loss(trail, video))
    assert vae_loss(trail, video, ghost_weight=10) > 1.2 * vae_loss(grey, video, ghost_weight=10)


def test_ghost_weight_passes_no_gradient_through_the_weight():
    """The gradient is that of the loss with the weight held as a constant: the reconstruction learns to match the
    clip, not to lower its own saturation to shrink the weight."""
    video = _clip()
    recon = (
        video + 0.3 * torch.randn(video.shape, generator=torch.Generator().manual_seed(1))
    ).requires_grad_(True)
    got = torch.autograd.grad(vae_loss(recon, video, ghost_weight=10), recon)[0]

    def saturation(x: torch.Tensor) -> torch.Tensor:
        return (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) / 2

    weight = (1 + 10 * saturation(video) + 10 * saturation(recon)).detach()
    constant = (weight * (recon - video).abs()).mean() / weight.mean() + ((recon - video) ** 2).mean()
    torch.testing.assert_close(got, torch.autograd.grad(constant, recon)[0])


def test_the_decoder_stage_can_leave_the_flow_videos_out():
    """`--no-flow-videos`: the decoder only ever decodes clips at inference, so it may train on the clips alone;
    by default it trains on the clips and their flow videos, as the VAE stage does."""
    clips = make_clips(4, 3, families=("fast",))
    both, centres = _vae_data(4, 3, ("fast",))
    alone, alone_centres = _vae_data(4, 3, ("fast",), flow_videos=False)
    assert len(both) == 6 and len(alone) == 3 and len(alone_centres) == 3 and len(centres) == 6
    for video, clip in zip(alone, clips, strict=True):
        torch.testing.assert_close(video, clip_pixels(clip.frames), rtol=0, atol=0)
    torch.testing.assert_close(both[3], clip_pixels(clips[0].flow_video()), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("flag", "stage_of_the_flag"), [("--no-flow-videos", "decoder"), ("--dense-flow", "denoiser")]
)
def test_stage_only_flags_are_refused_outside_their_stage(tmp_path, capsys, flag, stage_of_the_flag):
    for stage in {"vae", "decoder", "denoiser", "all"} - {stage_of_the_flag}:
        with pytest.raises(SystemExit):
            main([stage, flag, "--out", str(tmp_path), "--steps", "1"])
        assert f"{flag} applies to the {stage_of_the_flag} stage only" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
