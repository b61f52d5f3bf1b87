"""The simulated GPU (tora_model/simulated_gpu): every path runs on fake cuda tensors at tiny configs, each check
catches the mistake it is for, the storage accounting agrees with the real allocator, and the released 5B forward's
FLOPs match the analytic count."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tora_model.config import ToraConfig
from tora_model.simulated_gpu.accounting import DeviceMemory
from tora_model.simulated_gpu.chain import STAGES, Models, Setting, run_chain
from tora_model.simulated_gpu.fake_cuda import SimulatedGPUError, materialize, simulated_cuda
from tora_model.simulated_gpu.plan import parse_card, recommend
from tora_model.text import tiny_t5_config
from tora_model.transformer import build_transformer
from tora_model.vae import VAEConfig

TINY_VAE = VAEConfig.preset("tiny")
TINY_ST_VAE = VAEConfig(channels=16, channel_mult=(1, 1, 2), layers_per_block=1, norm_groups=4)


def tiny_models(preset: str) -> Models:
    config = ToraConfig.preset(preset)
    vae = TINY_ST_VAE if config.backbone == "st_dit" else TINY_VAE
    return Models(config, vae, tiny_t5_config(64, config.text_dim))


CASES = [  # (preset, setting): T2V, I2V, fp16, fp8, block swap (some and all blocks), the ST-DiT tiny model
    ("tiny", Setting("t2v", "bf16", 0, 64, 64, 9)),
    ("tiny_i2v", Setting("i2v", "fp16", 0, 64, 64, 9)),
    ("tiny", Setting("t2v", "fp8_e4m3fn", 1, 64, 48, 17)),
    ("tiny_i2v", Setting("i2v", "bf16", 2, 64, 64, 9)),
    ("tiny_st", Setting("i2v", "fp8_e4m3fn", 4, 96, 64, 17)),
    ("tiny", Setting("t2v", "bf16", 0, 64, 64, 9, motion=False)),
]


@pytest.mark.parametrize(("preset", "setting"), CASES, ids=[f"{p}-{s.describe()}" for p, s in CASES])
def test_every_path_runs_on_the_simulated_gpu(preset, setting):
    result = run_chain(setting, tiny_models(preset))
    names = [s.name for s in result.stages]
    assert any(n.startswith("decode (tiled") for n in names) and any(
        n.startswith("decode (untiled") for n in names
    )
    assert any(n.startswith("motion") for n in names) == setting.motion
    steps = result.stage("denoising steps")
    assert steps.flops > 0 and result.device_to_host_per_step == 0
    # the sampler node holds its weights, plus working memory
    assert result.stage("sampler").peak_bytes > result.weight_bytes["transformer"] > 0
    swapped_blocks = list(build_transformer_like(preset).transformer_blocks)[-setting.blocks_to_swap :]
    if setting.blocks_to_swap:
        # every swapped block crosses PCIe once per forward; two forwards per step would double it
        one_pass = sum(_stored_bytes(b, setting) for b in swapped_blocks)
        assert one_pass <= result.host_to_device_per_step < 2 * one_pass
    else:  # one fresh noise tensor per DPM step crosses to the GPU (drawn on the CPU generator), not two
        latents = (setting.num_frames - 1) // 4 + 1
        c = ToraConfig.preset(preset).vae_spatial_compression
        noise = latents * 16 * (setting.height // c) * (setting.width // c) * 4
        assert noise <= result.host_to_device_per_step < 2 * noise


def build_transformer_like(preset: str) -> nn.Module:
    config = ToraConfig.preset(preset)
    if config.backbone == "st_dit":
        from tora_model.st_dit import STDiTTransformer

        return STDiTTransformer(config, device="meta")
    return build_transformer(config, device="meta")


def _stored_bytes(block: nn.Module, setting: Setting) -> int:
    """Bytes of a block as Load Tora Model stores it: fp8 Linear weights, the rest in the compute dtype."""
    total = 0
    for module in block.modules():
        for name, tensor in module.named_parameters(recurse=False):
            fp8 = setting.precision == "fp8_e4m3fn" and type(module) is nn.Linear and name == "weight"
            total += tensor.numel() * (1 if fp8 else 2)
    return total


# ---- each check catches its mistake ------------------------------------------------------------------------------


def tiny_on_cuda() -> nn.Module:
    model = build_transformer(ToraConfig.preset("tiny"), device="meta", dtype=torch.bfloat16)
    return model


def tiny_inputs(config: ToraConfig):
    return (
        torch.zeros(2, 3, 16, 8, 8, dtype=torch.bfloat16, device="cuda"),
        torch.zeros(2, dtype=torch.int64, device="cuda"),
        torch.zeros(2, config.max_text_len, config.text_dim, dtype=torch.bfloat16, device="cuda"),
    )


def test_a_parameter_left_on_the_host_is_named():
    model = tiny_on_cuda()
    with simulated_cuda(), DeviceMemory() as memory:
        memory.name_modules(model, "transformer")
        materialize(model, "cuda")
        materialize(model.transformer_blocks[1].ff, "cpu")  # e.g. a block-swap hook that never ran
        with pytest.raises(
            SimulatedGPUError, match=r"transformer\.transformer_blocks\.1\.ff.*cpu.*cuda|cuda.*cpu"
        ):
            model(*tiny_inputs(model.config))


def test_the_same_model_on_the_device_runs():
    model = tiny_on_cuda()
    with simulated_cuda(), DeviceMemory() as memory:
        materialize(model, "cuda")
        with memory.stage("forward", hot=True) as record, torch.no_grad():
            out = model(*tiny_inputs(model.config))
        assert out.device.type == "cuda" and out.dtype == torch.bfloat16
    assert record.flops > 0 and record.device_to_host_bytes == 0


@pytest.mark.parametrize(
    ("mistake", "message", "fine_elsewhere"),
    [
        (lambda x: x.sum().item(), "_local_scalar_dense", False),
        (lambda x: x.tolist(), "_local_scalar_dense", False),
        (lambda x: bool((x > 0).any()), "_local_scalar_dense", False),
        (lambda x: x.cpu(), "device-to-host copy inside the step loop", True),
        (lambda x: x.to("cpu", non_blocking=True), "device-to-host copy inside the step loop", True),
        (
            lambda x: (x @ x.transpose(-1, -2)).float() * 2,
            "promotes a half-precision activation to float32",
            True,
        ),
    ],
    ids=["item", "tolist", "python-if", "cpu", "non-blocking-to-host", "fp32-promotion"],
)
def test_hot_loop_mistakes_raise_naming_op_stage_and_line(mistake, message, fine_elsewhere):
    if (
        fine_elsewhere
    ):  # copies to the host and fp32 math are fine outside the step loop (e.g. the final decode)
        with simulated_cuda(), DeviceMemory() as memory, memory.stage("decode"):
            mistake(torch.zeros(2, 2048, 2048, dtype=torch.bfloat16, device="cuda"))
    with simulated_cuda(), DeviceMemory() as memory:
        x = torch.zeros(2, 2048, 2048, dtype=torch.bfloat16, device="cuda")  # its fp32 square is 32 MiB
        with memory.stage("steps", hot=True), pytest.raises(SimulatedGPUError, match=message) as error:
            mistake(x)
    assert "stage 'steps'" in str(error.value) and "test_simulated_gpu.py" in str(error.value)


# ---- the accounting agrees with the real allocator ---------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc():
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path) if path else None
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2) to read the real CPU allocator")
    libc.mallinfo2.restype = _MallInfo2
    return libc


class _MallocPeak(TorchDispatchMode):
    """Bytes glibc malloc has handed out (heap + mmapped), read after every op: the real allocator's live bytes."""

    def __init__(self, libc) -> None:
        super().__init__()
        self.libc = libc
        self.start = self.peak = self.used()

    def used(self) -> int:
        info = self.libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self.used())
        return out


def test_tracked_peak_matches_the_real_allocator_on_the_cpu():
    """Same forward, real tensors under glibc malloc vs fake tensors under DeviceMemory, both read at op boundaries.

    Tolerance 5 %: malloc adds a 16-byte header per chunk and torch aligns CPU allocations to 64 bytes (a few hundred
    allocations here: < 0.1 %), and Python objects made during the forward land on the same heap. The CUDA allocator's
    512-byte rounding is not in play on the CPU. Measured: 0.1 %.
    """
    libc = _glibc()
    config = ToraConfig.preset("tiny").replace(num_heads=4, head_dim=32)
    shape = (2, 5, 16, 16, 24)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: no per-thread scratch buffers
    try:
        model = build_transformer(config, device="cpu", dtype=torch.float32)
        inputs = (
            torch.zeros(*shape),
            torch.tensor([500, 500]),
            torch.zeros(2, config.max_text_len, config.text_dim),
        )
        with torch.no_grad():
            model(*inputs)  # warm-up: cached RoPE tables, kernel set-up
            with _MallocPeak(libc) as real:
                out = model(*inputs)
                del out
        meta = build_transformer(config, device="meta", dtype=torch.float32)
        with simulated_cuda(), DeviceMemory() as memory:
            materialize(meta, "cpu")
            fake_inputs = (
                torch.zeros(*shape),
                torch.zeros(2, dtype=torch.int64),
                torch.zeros(2, 16, config.text_dim),
            )
            start = memory.live["cpu"]
            with memory.stage("forward") as record, torch.no_grad():
                out = meta(*fake_inputs)
                del out
    finally:
        torch.set_num_threads(threads)
    real_peak, tracked_peak = real.peak - real.start, record.host_peak_bytes - start
    assert real_peak > 1_000_000
    assert tracked_peak == pytest.approx(real_peak, rel=0.05)


# ---- the released 5B -----------------------------------------------------------------------------------------------


def test_released_5b_forward_flops_match_the_analytic_count():
    """42 layers × (24·D²·N + 4·N²·D), D = 3072, N = 17,550 video + 226 text tokens, per CFG row, within 10 %."""
    config = ToraConfig.preset("cogvideox_5b_t2v")
    model = build_transformer(config, device="meta", dtype=torch.bfloat16)
    with simulated_cuda(), DeviceMemory() as memory:
        materialize(model, "cuda")
        x = torch.zeros(2, 13, 16, 60, 90, dtype=torch.bfloat16, device="cuda")
        t = torch.zeros(2, dtype=torch.int64, device="cuda")
        text = torch.zeros(2, 226, 4096, dtype=torch.bfloat16, device="cuda")
        with memory.stage("forward", hot=True) as record, torch.no_grad():
            model(x, t, text)
    d, n = config.hidden_dim, 13 * 30 * 45 + 226
    analytic = config.num_layers * (24 * d * d * n + 4 * n * n * d)
    assert record.flops / 2 == pytest.approx(analytic, rel=0.10)
    # attention ran as a fused kernel: no [S, S] score matrix (2 × 48 × 17,776² bf16 = 56 GiB) was ever live
    assert record.activation_bytes < 4 * 2**30


def test_plan_recommends_the_first_setting_that_fits(monkeypatch):
    import tora_model.simulated_gpu.plan as plan

    models = tiny_models("tiny")
    monkeypatch.setattr(plan, "run_chain", lambda setting, stages=STAGES: run_chain(setting, models, stages))
    blocks = models.transformer.num_layers
    big, _ = recommend(48, Setting("t2v", "bf16", 0, 64, 64, 9), blocks)
    assert (big.precision, big.blocks_to_swap) == ("bf16", 0)
    none, tried = recommend(0.4, Setting("t2v", "bf16", 0, 64, 64, 9), blocks)  # less than the CUDA context
    assert none is None and len(tried) == len(plan.CANDIDATES)
    assert parse_card(" 12GB ") == 12 and parse_card("24 GiB") == 24
    with pytest.raises(plan.ConfigError, match="--gpu takes a card's memory"):
        parse_card("lots")


# ---- the nodes' memory requests agree with the simulated run -----------------------------------------------------


def test_memory_estimates_agree_with_the_simulated_run():
    """What the nodes ask ComfyUI for (tora_model.memory_estimate) against the simulated peak above the weights, at
    480×320×33 with the released 5B and VAE, bf16: within 10 % (measured: step −0.5 %, tiled decode +3 %, tiled
    one-pass flow encode +3 %, 8-frame chunks +1 %; the estimates are rounded up, never far below)."""
    from tora_model import memory_estimate
    from tora_model.vae import CogVideoXVAE, Tiling

    width, height, frames = 480, 320, 33
    latents = (frames - 1) // 4 + 1
    config, vae_config = ToraConfig.preset("cogvideox_5b_t2v"), VAEConfig()
    model = build_transformer(config, device="meta", dtype=torch.bfloat16)
    with torch.device("meta"):
        vae = CogVideoXVAE(vae_config).eval()
    measured = {}
    with simulated_cuda(), DeviceMemory() as memory, torch.no_grad():
        materialize(model, "cuda")
        x = torch.zeros(2, latents, 16, height // 8, width // 8, dtype=torch.bfloat16, device="cuda")
        t = torch.zeros(2, dtype=torch.int64, device="cuda")
        text = torch.zeros(2, 226, 4096, dtype=torch.bfloat16, device="cuda")
        with memory.stage("step") as record:
            model(x, t, text)
        measured["step"] = record.activation_bytes
        materialize(model, "meta")
        materialize(vae, "cuda", torch.bfloat16)
        video = torch.zeros(1, 3, frames, height, width, dtype=torch.bfloat16, device="cuda")
        for name, per_chunk in (("encode", None), ("encode 8-frame chunks", 8)):
            with memory.stage(name) as record:
                vae.encode(video, frames_per_chunk=per_chunk, tiling=Tiling())
            measured[name] = record.activation_bytes
        del video
        z = torch.zeros(1, 16, latents, height // 8, width // 8, dtype=torch.bfloat16, device="cuda")
        with memory.stage("decode") as record:
            vae.decode(z, tiling=Tiling())
        measured["decode"] = record.activation_bytes
    size = (width, height, frames)
    video_bytes = 3 * frames * height * width * 2  # the input video was live before the encode stages began
    estimated = {
        "step": memory_estimate.sampler_step_bytes(config, *size),
        "encode": memory_estimate.flow_encode_bytes(vae_config, *size, tiling=Tiling()) - video_bytes,
        "encode 8-frame chunks": memory_estimate.flow_encode_bytes(
            vae_config, *size, tiling=Tiling(), frames_per_chunk=8
        )
        - video_bytes,
        "decode": memory_estimate.vae_decode_bytes(vae_config, *size, tiling=Tiling()),
    }
    for name, value in measured.items():
        assert estimated[name] == pytest.approx(value, rel=0.10), name


def test_plan_command_prints_the_node_table_and_the_recommendation(monkeypatch, capsys):
    import tora_model.simulated_gpu.plan as plan
    from tora_model.cli import main

    models = tiny_models("tiny")
    monkeypatch.setattr(plan, "run_chain", lambda setting, stages=STAGES: run_chain(setting, models, stages))
    monkeypatch.setattr(
        plan, "recommend", lambda card, base: recommend(card, base, models.transformer.num_layers)
    )
    size = ["--width", "64", "--height", "64", "--num-frames", "9"]
    assert (
        main(["-q", "plan", *size, "--precision", "fp8_e4m3fn", "--blocks-to-swap", "1", "--gpu", "8GB"]) == 0
    )
    out = capsys.readouterr().out
    assert "T2V fp8_e4m3fn + block swap 1, 64x64x9" in out and "| Tora Sampler |" in out
    assert (
        "block swap 1 blocks" in out and "Fits a 8 GB card" in out and "an estimate, not a measurement" in out
    )
    assert main(["-q", "plan", *size, "--gpu", "48GB"]) == 0
    assert "For a 48 GB card, Load Tora Model: precision `bf16`, offload `comfy`" in capsys.readouterr().out
    assert main(["-q", "plan", "--gpu", "lots"]) == 2
