"""The VAE's activation layout follows the device (issue 16, finding 5): channels-last on the CPU, contiguous else.

CUDA's group_norm makes a channels-last input contiguous again, two full-size copies per resnet convolution; the
meta device stands in for CUDA here (same choice: not the CPU). The two layouts are the same numbers.
"""

import torch

from tora_model import vae_blocks
from tora_model.vae import CogVideoXVAE, VAEConfig


def test_layout_is_channels_last_only_on_the_cpu():
    assert vae_blocks.padded_layout(torch.device("cpu")) == torch.channels_last_3d
    assert vae_blocks.padded_layout(torch.device("meta")) == torch.contiguous_format
    assert vae_blocks.padded_layout(torch.device("cuda", 1)) == torch.contiguous_format
    conv = vae_blocks.CausalConv3d(4, 4, 3)
    x = torch.zeros(1, 4, 3, 8, 8)
    assert conv.pad(x, None)[0].is_contiguous(memory_format=torch.channels_last_3d)
    assert conv.pad(x.to("meta"), None)[0].is_contiguous()


@torch.no_grad()
def test_contiguous_layout_gives_the_same_video(monkeypatch):
    """The CUDA layout run on the CPU: decode and encode agree with the CPU layout to float32 rounding."""
    torch.manual_seed(0)
    vae = CogVideoXVAE(VAEConfig.preset("tiny")).eval()
    z = torch.randn(1, 16, 3, 2, 3)
    video = torch.rand(1, 3, 9, 16, 24) * 2 - 1
    cpu_layout = vae.decode(z), vae.encode(video).mean
    monkeypatch.setattr(vae_blocks, "padded_layout", lambda device: torch.contiguous_format)
    other = vae.decode(z), vae.encode(video).mean
    for a, b in zip(cpu_layout, other, strict=True):
        assert b.is_contiguous()
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
