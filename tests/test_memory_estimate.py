"""tora_model.memory_estimate against the live-tensor trace figures of issue 16 (720×480×49, bf16, CFG batch 2).

The traced values (meta device, each storage counted from its creating op to its last reference) are in the module
docstring; the estimate must stay within 2 % of each (input video and sampler state are extra terms of the estimate).
"""

import pytest
import torch

from tora_model.config import ToraConfig
from tora_model.memory_estimate import (
    extractor_bytes,
    flow_encode_bytes,
    motion_feature_bytes,
    sampler_step_bytes,
    vae_decode_bytes,
)
from tora_model.vae import Tiling, VAEConfig

GIB = 2**30
T2V = ToraConfig.preset("cogvideox_5b_t2v")
VAE = VAEConfig()
SIZE = (720, 480, 49)
INPUT_VIDEO = 3 * 49 * 480 * 720 * 3  # bf16 + uint8 flow video
SAMPLER_STATE = 8 * 13 * 16 * 60 * 90 * 4


def test_sampler_step_and_motion_features_match_the_trace():
    step = sampler_step_bytes(T2V, *SIZE, batch=2, dtype=torch.bfloat16)
    assert (step - SAMPLER_STATE) / GIB == pytest.approx(2.649, rel=0.02)
    assert motion_feature_bytes(T2V, *SIZE) == 42 * 13 * 128 * 30 * 45 * 2  # 0.176 GiB
    assert sampler_step_bytes(T2V, *SIZE, motion=True) == step + motion_feature_bytes(T2V, *SIZE)
    fp8 = sampler_step_bytes(T2V, *SIZE, weight_upcast=True) - step
    assert fp8 == 2 * 4 * 3072 * 3072 * 2  # one MLP weight upcast to bf16
    assert sampler_step_bytes(T2V, *SIZE, batch=1) < 0.51 * step  # without CFG batching: half
    assert sampler_step_bytes(T2V, *SIZE, dtype=torch.float32) > 1.9 * step


def test_vae_estimates_match_the_trace():
    tiles = Tiling()
    assert (flow_encode_bytes(VAE, *SIZE, tiling=tiles) - INPUT_VIDEO) / GIB == pytest.approx(2.779, rel=0.02)
    chunked = flow_encode_bytes(VAE, *SIZE, tiling=tiles, frames_per_chunk=8)
    assert (chunked - INPUT_VIDEO) / GIB == pytest.approx(0.886, rel=0.02)
    assert vae_decode_bytes(VAE, *SIZE, tiling=tiles) / GIB == pytest.approx(1.598, rel=0.02)
    assert flow_encode_bytes(VAE, 480, 320, 33, tiling=tiles) / GIB == pytest.approx(1.794 + 0.041, rel=0.02)
    assert vae_decode_bytes(VAE, 480, 320, 33, tiling=tiles) / GIB == pytest.approx(1.318, rel=0.04)


def test_estimates_order_as_expected():
    tiles = Tiling()
    assert flow_encode_bytes(VAE, *SIZE) > 5 * flow_encode_bytes(VAE, *SIZE, tiling=tiles)
    for frames in (9, 17, 25, 49):
        one = flow_encode_bytes(VAE, 720, 480, frames, tiling=tiles)
        chunked = flow_encode_bytes(VAE, 720, 480, frames, tiling=tiles, frames_per_chunk=8)
        assert chunked <= one and (chunked == one) == (frames == 9)
    assert vae_decode_bytes(VAE, *SIZE) > 4 * vae_decode_bytes(VAE, *SIZE, tiling=tiles)
    assert extractor_bytes(T2V, *SIZE) > motion_feature_bytes(T2V, *SIZE)
    tiny = ToraConfig.preset("tiny")
    assert 0 < sampler_step_bytes(tiny, 96, 64, 9) < 2**20
