"""The node chain on the simulated GPU, through the nodes' plain-torch fallback (no ComfyUI).

The tiny model files are loaded for real on the host (as Load Tora Model does), with the compute device reported as
`cuda`; then Trajectory To Motion Latent, Tora Sampler and Motion VAE Decode run on fake cuda tensors. A tensor left
on the wrong device, a host sync or an fp32 promotion inside the step loop fails the test; afterwards nothing of
ours may stay on the device.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_nodes_e2e import CANVAS, F, H, W, conditioning, env, load, nodes  # noqa: F401 (fixtures)
from tora_model.simulated_gpu.accounting import DeviceMemory
from tora_model.simulated_gpu.fake_cuda import simulated_cuda

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("precision", "offload", "swap"),
    [("bf16", "comfy", 0), ("fp8_e4m3fn", "block_swap", 1), ("bf16", "block_swap", 2)],
)
def test_node_chain_on_the_simulated_gpu(env, conditioning, monkeypatch, precision, offload, swap):  # noqa: F811
    glue = env.nodes.comfy_glue
    monkeypatch.setattr(glue, "compute_device", lambda: CUDA)
    monkeypatch.setattr(glue, "supports_bf16", lambda device: True)  # an Ampere or newer card
    model, vae = load(env, precision=precision, offload=offload, swap=swap)
    positive, negative = conditioning
    n = nodes(env)
    trajectory, *_ = n["TrajectoryCanvas"].run(W, H, F, json.dumps(CANVAS))["result"]
    pipeline = env.tora_model.pipeline
    real_sample = pipeline.sample

    with simulated_cuda(), DeviceMemory() as memory:

        def sample_in_hot_loop(
            *args, **kwargs
        ):  # the step loop only: the node's setup and hand-over are not hot
            with memory.stage("denoising steps", hot=True):
                return real_sample(*args, **kwargs)

        monkeypatch.setattr(pipeline, "sample", sample_in_hot_loop)
        with memory.stage("motion node"):
            motion, flow_preview = n["TrajectoryToMotionLatent"].encode(
                model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True, trajectory=trajectory
            )
        assert all(f.device.type != "cuda" for f in motion.features)  # handed on from the host, not the GPU
        with memory.stage("sampler node"):
            (latent,) = n["ToraSampler"].sample(
                model, positive, negative, W, H, F, 2, 6.0, True, "dpmpp_2m_sde", 7, motion
            )
        with memory.stage("decode node"):
            (frames,) = n["MotionVAEDecode"].decode(vae, latent, True)
        left_on_device = memory.live["cuda"]
    assert latent["samples"].device.type == "cpu" and tuple(frames.shape) == (F, H, W, 3)
    steps = next(r for r in memory.records if r.name == "denoising steps")
    assert steps.flops > 0 and steps.device_to_host_bytes == 0
    sampler = next(r for r in memory.records if r.name == "sampler node")
    assert sampler.peak_bytes > 0 and sampler.host_to_device_bytes > 0
    assert left_on_device == 0, f"{left_on_device} bytes of ours stayed on the GPU after the nodes ran"
