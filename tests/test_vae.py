"""CogVideoX VAE: numerics against diffusers' AutoencoderKLCogVideoX at a tiny config, chunking, tiling, posterior.

Like with like: our one-pass paths are compared with diffusers' `encoder(x)` / `decoder(z)` called once; our
chunked paths with diffusers' `encode` (8-frame batches) and `decode` (latent chunks [0:3], [3:5], …). The two
differ from each other because group-norm statistics span the frames of one call (see tora_model/vae.py).
"""

import math

import pytest
import torch

from tora_model.errors import ConfigError
from tora_model.vae import SCALE, CogVideoXVAE, DiagonalGaussian, Tiling, VAEConfig, chunk_bounds

diffusers = pytest.importorskip("diffusers", reason="diffusers is the test-only numerical reference")

TOL = 1e-4


def random_state_dict(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor random (norm scales around 1), convolutions scaled by 1/sqrt(fan-in) to keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, value in sorted(model.state_dict().items()):
        noise = torch.randn(value.shape, generator=g)
        if value.ndim > 1:
            sd[name] = noise / math.sqrt(value[0].numel())
        elif "norm" in name and name.endswith("weight"):
            sd[name] = 1 + 0.2 * noise
        else:
            sd[name] = 0.1 * noise
    return sd


@pytest.fixture(scope="module")
def models():
    cfg = VAEConfig.preset("tiny")
    ref = diffusers.AutoencoderKLCogVideoX(
        block_out_channels=cfg.block_channels,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_groups,
        latent_channels=cfg.latent_channels,
    ).eval()
    sd = random_state_dict(ref)
    ref.load_state_dict(sd)
    ours = CogVideoXVAE(cfg).eval()
    ours.load_state_dict(sd)  # strict: the names are diffusers' names
    return ours, ref


def _video(frames=17, h=16, w=24, seed=1):
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latent(t=5, h=2, w=3, seed=2):
    return torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(seed))


def test_presets_and_scale():
    cfg = VAEConfig.preset("cogvideox_5b")
    assert (cfg.channels, cfg.channel_mult, cfg.layers_per_block, cfg.latent_channels) == (
        128,
        (1, 2, 2, 4),
        3,
        16,
    )
    assert (cfg.spatial_compression, cfg.temporal_compression) == (8, 4)
    assert SCALE == 0.7
    with pytest.raises(ConfigError, match="norm_groups"):
        VAEConfig(channels=20, norm_groups=32)


def test_chunk_schedule_is_the_official_one():
    assert chunk_bounds(13, 2) == [(0, 3), (3, 5), (5, 7), (7, 9), (9, 11), (11, 13)]  # SAT/diffusers decode
    assert chunk_bounds(49, 8) == [(0, 9)] + [(s, s + 8) for s in range(9, 49, 8)]  # diffusers encode
    assert chunk_bounds(1, 2) == [(0, 1)] and chunk_bounds(13, None) == [(0, 13)]


@torch.no_grad()
def test_encode_one_pass_matches_diffusers(models):
    ours, ref = models
    x = _video()
    moments, _ = ref.encoder(x)  # one pass, as SAT encodes
    post = ours.encode(x)
    assert post.mean.shape == (1, 16, 5, 2, 3)
    assert (post.mean - moments[:, :16]).abs().max() <= TOL
    assert (post.logvar - moments[:, 16:].clamp(-30, 20)).abs().max() <= TOL


@torch.no_grad()
def test_encode_chunked_matches_diffusers(models):
    ours, ref = models
    x = _video()
    dist = ref.encode(x).latent_dist  # frame batches [0:9], [9:17] with a conv cache
    post = ours.encode(x, frames_per_chunk=8)
    assert (post.mean - dist.mean).abs().max() <= TOL
    assert (post.logvar - dist.logvar).abs().max() <= TOL


@torch.no_grad()
def test_decode_one_pass_matches_diffusers(models):
    ours, ref = models
    z = _latent()
    expected, _ = ref.decoder(z)
    got = ours.decode(z, latents_per_chunk=None)
    assert got.shape == (1, 3, 17, 16, 24)
    assert (got - expected).abs().max() <= TOL


@torch.no_grad()
def test_decode_chunked_matches_diffusers(models):
    ours, ref = models
    z = _latent()
    expected = ref.decode(z).sample  # latent chunks [0:3], [3:5]
    got = ours.decode(z)
    assert (got - expected).abs().max() <= TOL


@torch.no_grad()
def test_streaming_cache_is_a_value_and_causal(models):
    ours, _ = models
    z = _latent()
    full = ours.decode(z)
    first, cache = ours.decode_chunk(z[:, :, :3])
    second, _ = ours.decode_chunk(z[:, :, 3:5], cache)
    again, _ = ours.decode_chunk(z[:, :, 3:5], cache)  # the cache was not consumed or mutated
    assert torch.equal(torch.cat([first, second], dim=2), full)
    assert torch.equal(second, again)
    assert torch.equal(ours.decode(z[:, :, :3]), full[:, :, :9])  # a latent prefix decodes to a video prefix


@torch.no_grad()
def test_posterior_sample_uses_the_generator_like_diffusers(models):
    ours, ref = models
    x = _video(frames=9)
    dist = ref.encode(x).latent_dist
    post = ours.encode(x, frames_per_chunk=8)
    expected = dist.sample(torch.Generator().manual_seed(7))
    assert (post.sample(torch.Generator().manual_seed(7)) - expected).abs().max() <= TOL
    assert torch.equal(post.mode(), post.mean)
    per_item = DiagonalGaussian(post.mean.repeat(2, 1, 1, 1, 1), post.logvar.repeat(2, 1, 1, 1, 1))
    gens = [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)]
    both = per_item.sample(gens)
    assert torch.equal(both[:1], post.sample(torch.Generator().manual_seed(7)))
    assert not torch.equal(both[0], both[1])


def _rms(a, b):
    return ((a - b).pow(2).mean().sqrt() / b.std()).item()


def _tiled_deviation(ref, run_ours, run_ref, untiled):
    """(ours, diffusers) RMS deviation of the tiled from the untiled result, relative to the signal RMS."""
    ref.enable_tiling(
        tile_sample_min_height=48, tile_sample_min_width=40
    )  # = Tiling(6, 5, 1, 1) in diffusers
    try:
        ref_tiled = run_ref()
    finally:
        ref.disable_tiling()
    return _rms(run_ours(Tiling(6, 5, 1, 1)), untiled), _rms(ref_tiled, untiled)


@torch.no_grad()
def test_tiled_decode_and_encode_deviate_no_more_than_diffusers_tiling(models):
    """Tiles are not exact (per-tile norm statistics, zero padding at tile borders). Stated tolerance, with these
    random weights: RMS deviation from untiled ≤ 25 % (decode) / 50 % (encode) of the signal RMS, and no more
    than diffusers' own tiling at the same tile size and overlap (6×5 latents, overlap 1; sizes chosen where
    diffusers' crop arithmetic is consistent)."""
    ours, ref = models
    z = _latent(t=1, h=6, w=9)
    untiled = ours.decode(z)
    ours_err, ref_err = _tiled_deviation(
        ref, lambda t: ours.decode(z, tiling=t), lambda: ref.decode(z).sample, untiled
    )
    assert 0 < ours_err <= min(ref_err, 0.25), (ours_err, ref_err)
    assert torch.equal(ours.decode(z, tiling=Tiling(6, 9, 2, 3)), untiled)  # one tile = untiled

    x = _video(frames=1, h=48, w=72)
    untiled = ours.encode(x).mean
    ours_err, ref_err = _tiled_deviation(
        ref, lambda t: ours.encode(x, tiling=t).mean, lambda: ref.encode(x).latent_dist.mean, untiled
    )
    assert 0 < ours_err <= min(ref_err, 0.5), (ours_err, ref_err)


def test_bad_inputs_raise_config_errors(models):
    ours, _ = models
    with pytest.raises(ConfigError, match="1 \\+ 4·k frames"):
        ours.encode(_video(frames=8))
    with pytest.raises(ConfigError, match="multiples of 8"):
        ours.encode(_video(frames=1, h=20))
    with pytest.raises(ConfigError, match="latents"):
        ours.decode(torch.zeros(1, 4, 2, 2, 2))
    with pytest.raises(ConfigError, match="overlap"):
        Tiling(8, 8, 8, 2)
