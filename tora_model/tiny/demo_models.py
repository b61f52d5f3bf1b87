"""The tiny models of `python -m tora_model demo --weights random`, also the tests' tiny T2V/I2V models.

Source: the `tiny` / `tiny_i2v` transformer presets and the `tiny` VAE preset (`config.py`, `vae.py`) with seeded
random weights; a tiny random T5 (`text.tiny_t5_config`) with a word-level tokenizer built for `DEMO_PROMPT`; two
tracks on the official 256×256 trajectory canvas (`tora_spec.md` §2.1). Everything is built locally; nothing
downloads. The trained tiny Tora is `demo_trained.py`.

Layouts: models on the CPU in float32; `encode_demo_prompt` gives T5 embeddings [1, max_text_len, text_dim].
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import ToraConfig
from ..trajectory import Track, Trajectory
from ..transformer import build_transformer
from ..vae import CogVideoXVAE, VAEConfig
from ..vae_loading import save_vae

log = logging.getLogger("tora_model")

DEMO_PROMPT = "a red ball rolls along a curved path on the grass"


def build_demo_models(seed: int = 0, i2v: bool = False) -> tuple[torch.nn.Module, CogVideoXVAE]:
    """Tiny transformer (`tiny` / `tiny_i2v` preset) and tiny VAE with seeded random weights, CPU float32.

    The fusers' temporal convs are zero at initialisation (the fuser is the identity until trained); they get small
    random values here so the trajectory actually changes the output. The global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_transformer(ToraConfig.preset("tiny_i2v" if i2v else "tiny"))
        for fuser in model.fuser:
            for conv in (fuser.flow_gamma_temporal, fuser.flow_beta_temporal):
                torch.nn.init.normal_(conv.weight, std=0.05)
        vae = CogVideoXVAE(VAEConfig.preset("tiny")).eval()
    return model, vae


def demo_trajectory() -> Trajectory:
    """Two tracks on the official 256×256 canvas: a smooth S-curve and a short straight push."""
    return Trajectory(
        256,
        256,
        (
            Track(points=((40.0, 70.0), (110.0, 40.0), (150.0, 130.0), (220.0, 190.0))),
            Track(points=((60.0, 210.0), (130.0, 170.0)), interpolation="linear"),
        ),
    )


def save_demo_models(model: torch.nn.Module, vae: CogVideoXVAE, folder: Path) -> tuple[Path, Path]:
    """Write the tiny models as a canonical transformer .safetensors and a diffusers-style vae/ folder."""
    from safetensors.torch import save_file

    transformer_path = folder / "transformer.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, transformer_path)
    vae_folder = folder / "vae"
    save_vae(vae, vae_folder)
    return transformer_path, vae_folder


def write_demo_t5(folder: Path, text_dim: int, seed: int) -> Path:
    """A tiny random T5 encoder (width text_dim) plus a word-level T5 tokenizer for DEMO_PROMPT, saved to folder.

    Both are built locally from a config and a vocabulary list; nothing is downloaded.
    """
    from transformers import T5EncoderModel, T5Tokenizer
    from transformers.utils import logging as transformers_logging

    from ..text import tiny_t5_config

    transformers_logging.disable_progress_bar()  # a CLI process: bars for a 20 kB model are only noise
    words = sorted(set(DEMO_PROMPT.split()))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(f"▁{w}", -3.0) for w in words]
    t5_config = tiny_t5_config(len(vocab), text_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        T5EncoderModel(t5_config).save_pretrained(folder)
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(folder)
    return folder


def encode_demo_prompt(config: ToraConfig, folder: Path, seed: int) -> torch.Tensor:
    """DEMO_PROMPT → [1, max_text_len, text_dim] through the real text path (T5TextEncoder) with a tiny random T5."""
    from ..text import T5TextEncoder, encode_prompt

    encoder = T5TextEncoder.load(
        write_demo_t5(folder, config.text_dim, seed), dtype=torch.float32, max_length=config.max_text_len
    )
    cond, _ = encode_prompt(encoder, DEMO_PROMPT)
    log.info("text: %r encoded by a tiny random T5 (built locally) → %s", DEMO_PROMPT, tuple(cond.shape))
    return cond
