"""Every node, driven through an error mid-run, leaves nothing of ours on the device (issue 16, finding 3).

There is no GPU here, so the device is the meta device and the moves are followed, not made: `runtime.move`,
`offload.move_resident` and a fake ComfyUI memory manager (a loaded-model list, `load_models`, `unload`) record
where each module would be. The checks can therefore fail on the CPU: a model left "on meta" or left in the fake
loaded list after the node raised is exactly the stranding the issue describes. Swapped blocks are the exception:
the real block-swap handle, built as Load Tora Model builds it, moves them itself (to meta copies, which exist on
the CPU), so their tensors' real devices are checked. The estimates handed to ComfyUI are checked too (finding 2):
every load asks for the node's activation bytes beside the weights.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_nodes import load_pack

DEVICE = torch.device("meta")
HOST = torch.device("cpu")
W, H, F = 96, 64, 9


class Boom(RuntimeError):
    """Stands for an out-of-memory error or a Cancel inside a node."""


class Interrupt(BaseException):
    """Stands for a KeyboardInterrupt: nn.Module runs no `always_call` post-hook for it, so a swapped block that it
    stops keeps its copy on the device until someone releases it."""


class FakeComfy:
    """ComfyUI's memory manager as far as the pack uses it, with module placement followed in `where`."""

    def __init__(self, flag: str | None = None):
        self.flag = flag
        self.loaded: list[object] = []
        self.where: dict[int, torch.device] = {}
        self.requests: list[tuple[int, int]] = []
        self.fail_load = False

    def place(self, module, device) -> None:
        self.where[id(module)] = torch.device(device)

    def device_of(self, module) -> torch.device:
        return self.where.get(id(module), HOST)

    def load_models(self, patchers, memory_required, minimum_memory_required) -> None:
        self.requests.append((memory_required, minimum_memory_required))
        for patcher in patchers:
            self.loaded.append(patcher)
            self.place(patcher.model, DEVICE)
            if self.fail_load:
                raise Boom("out of memory while loading")

    def unload(self, patcher) -> None:
        if patcher in self.loaded:
            self.loaded.remove(patcher)
        self.place(patcher.model, HOST)

    def make_room(self, num_bytes, device) -> None:
        self.requests.append((num_bytes, num_bytes))


class FakePatcher:
    def __init__(self, model):
        self.model = model


@pytest.fixture
def pack():
    return load_pack()


@pytest.fixture
def comfy(pack, monkeypatch):
    fake = FakeComfy()
    glue, runtime = pack.nodes.comfy_glue, pack.nodes.runtime
    monkeypatch.setattr(glue, "compute_device", lambda: DEVICE)
    monkeypatch.setattr(glue, "vram_flag", lambda: fake.flag)
    monkeypatch.setattr(glue, "load_models", fake.load_models)
    monkeypatch.setattr(glue, "unload", fake.unload)
    monkeypatch.setattr(glue, "make_room", fake.make_room)
    monkeypatch.setattr(glue, "weights_device", fake.device_of)
    monkeypatch.setattr(runtime, "move", fake.place)

    def move_resident(model, swapped, device):
        fake.place(model, device)

    monkeypatch.setattr(runtime.offload, "move_resident", move_resident)
    return fake


def models(pack, managed: bool, swap: int = 0):
    """The tiny model and VAE as Load Tora Model hands them on; with `swap` > 0 the last `swap` blocks get the
    loader's block-swap handle (compute device DEVICE, masters in HOST memory) and the transformer no patcher."""
    types, tm = pack.nodes.types, pack.tora_model
    transformer = tm.transformer.build_transformer(tm.config.ToraConfig.preset("tiny"))
    vae = tm.vae.CogVideoXVAE(tm.vae.VAEConfig.preset("tiny"))
    patch = (lambda m: FakePatcher(m)) if managed else (lambda m: None)
    handle = (
        tm.offload.enable_block_swap(transformer.transformer_blocks, swap, DEVICE, HOST) if swap else None
    )
    patcher = None if swap else patch(transformer)
    model = types.ToraModel(transformer, patcher, torch.float32, "fp32", "sdpa", swap, "tiny", DEVICE, handle)
    return model, types.ToraVAE(vae, patch(vae), torch.float32, "tiny")


def test_a_swapped_model_needs_its_block_swap_handle(pack):
    """The handle is the one record of the swapped blocks: a count without one (or a mismatched one) is refused."""
    types, refused = pack.nodes.types, pack.tora_model.errors.ConfigError
    model, _ = models(pack, managed=False, swap=2)
    fields = (model.transformer, None, torch.float32, "fp32", "sdpa")
    with pytest.raises(refused, match="handle of 2 blocks .* got none; build it with"):
        types.ToraModel(*fields, 2, "tiny", DEVICE, None)
    with pytest.raises(refused, match="handle of 1 blocks .* got one of 2 blocks"):
        types.ToraModel(*fields, 1, "tiny", DEVICE, model.block_swap)
    with pytest.raises(refused, match="handle of 0 blocks .* got one of 2 blocks"):
        types.ToraModel(*fields, 0, "tiny", DEVICE, model.block_swap)


def nothing_of_ours_on_the_device(comfy: FakeComfy, model, vae) -> None:
    blocks = list(model.transformer.transformer_blocks)
    modules = [model.transformer, model.transformer.traj_extractor, vae.vae, *blocks]
    assert [comfy.device_of(m) for m in modules] == [HOST] * len(modules)
    assert comfy.loaded == []
    # every other move is only followed, so any real tensor off the host was put there by the block-swap handle
    tensors = [t for m in (model.transformer, vae.vae) for t in [*m.parameters(), *m.buffers()]]
    assert {t.device for t in tensors} == {HOST}
    if model.block_swap is not None:
        assert model.block_swap.stats.on_device_bytes == 0


def conditioning(model):
    text = torch.zeros(1, model.config.max_text_len, model.config.text_dim)
    return [[text, {}]]


def run_sampler(pack, model):
    cond = conditioning(model)
    pack.nodes.sampling_nodes.ToraSampler().sample(model, cond, cond, W, H, F, 2, 6.0, True, "ddim", 0)


def run_decode(pack, vae):
    latents = {"samples": torch.zeros(1, 16, 3, H // 8, W // 8)}
    pack.nodes.sampling_nodes.MotionVAEDecode().decode(vae, latents, True)


def run_motion(pack, model, vae):
    canvas = {
        "version": 1,
        "width": W,
        "height": H,
        "tracks": [
            {
                "kind": "path",
                "points": [[10.0, 10.0], [80.0, 50.0]],
                "interpolation": "linear",
                "start_frame": 0,
                "end_frame": None,
                "easing": "linear",
            }
        ],
    }
    trajectory = pack.tora_model.trajectory.trajectory_from_json(json.dumps(canvas))
    node = pack.nodes.motion_nodes.TrajectoryToMotionLatent()
    return node.encode(model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True, trajectory=trajectory)


def raising(*args, **kwargs):
    raise Boom("CUDA out of memory (simulated)")


@pytest.mark.parametrize("managed", [True, False], ids=["comfy_patcher", "moved_by_pack"])
def test_sampler_and_decode_release_everything_after_an_error(pack, comfy, monkeypatch, managed):
    model, vae = models(pack, managed)
    monkeypatch.setattr(pack.nodes.sampling_nodes, "sample_latents", raising)
    monkeypatch.setattr(pack.nodes.sampling_nodes, "decode_latents", raising)
    with pytest.raises(Boom):
        run_sampler(pack, model)
    nothing_of_ours_on_the_device(comfy, model, vae)
    with pytest.raises(Boom):
        run_decode(pack, vae)
    nothing_of_ours_on_the_device(comfy, model, vae)


@pytest.mark.parametrize("error", [Boom, Interrupt], ids=["error", "interrupt_skips_post_hook"])
def test_block_swap_parks_the_resident_part_and_a_stranded_block(pack, comfy, monkeypatch, error):
    """A swapped block's forward raises after its pre-hook copied it over. After an ordinary error its post-hook drops
    the copy; an interrupt skips the post-hook, so the copy is stranded on the device until the node releases it."""
    model, vae = models(pack, managed=True, swap=1)
    last = model.transformer.transformer_blocks[-1]

    def raising_forward(*args, **kwargs):
        assert {p.device for p in last.parameters()} == {DEVICE}  # the pre-hook brought it over
        assert model.block_swap.stats.on_device_bytes > 0
        raise error("stopped inside a swapped block")

    def fail_inside_the_swapped_block(*args, **kwargs):
        assert comfy.device_of(model.transformer) == DEVICE  # the resident part was moved
        last()

    monkeypatch.setattr(last, "forward", raising_forward)
    monkeypatch.setattr(pack.nodes.sampling_nodes, "sample_latents", fail_inside_the_swapped_block)
    with pytest.raises(error):
        run_sampler(pack, model)
    nothing_of_ours_on_the_device(comfy, model, vae)


def test_failing_while_loading_or_moving_releases_what_was_moved(pack, comfy, monkeypatch):
    """The steps before the node's work (ComfyUI loading, moving the resident part) are inside the release too."""
    model, vae = models(pack, managed=True)
    comfy.fail_load = True
    with pytest.raises(Boom):
        run_decode(pack, vae)
    nothing_of_ours_on_the_device(comfy, model, vae)

    swapped, _ = models(pack, managed=True, swap=1)

    def half_moved(transformer, blocks, device):
        comfy.place(transformer, device)
        if device == DEVICE:
            raise Boom("out of memory while moving the resident weights")

    monkeypatch.setattr(pack.nodes.runtime.offload, "move_resident", half_moved)
    with pytest.raises(Boom):
        run_sampler(pack, swapped)
    nothing_of_ours_on_the_device(comfy, swapped, vae)


def test_motion_node_loads_the_vae_then_only_the_extractor(pack, comfy, monkeypatch):
    """VAE alone, then the extractor alone (never the transformer's blocks); an error at either step releases it;
    the features are handed on from the host (ComfyUI's intermediate device), not the GPU."""
    model, vae = models(pack, managed=True)
    glue, motion_nodes = pack.nodes.comfy_glue, pack.nodes.motion_nodes
    seen = []

    def encode(vae_module, *args, **kwargs):
        seen.append(("vae", comfy.device_of(vae_module), comfy.device_of(model.transformer)))
        return torch.zeros(1, 3, 16, H // 8, W // 8)

    monkeypatch.setattr(motion_nodes, "encode_flow_video", encode)
    real_guidance = motion_nodes.guidance_from_latents

    def guidance(transformer, latents, **kwargs):
        extractor = transformer.traj_extractor
        seen.append(("extractor", comfy.device_of(extractor), comfy.device_of(transformer)))
        return real_guidance(transformer, latents, **kwargs)  # runs on the CPU: moves are only followed

    monkeypatch.setattr(motion_nodes, "guidance_from_latents", guidance)
    motion, _ = run_motion(pack, model, vae)
    assert seen == [("vae", DEVICE, HOST), ("extractor", DEVICE, HOST)]
    assert all(f.device == glue.output_device() for f in motion.features)
    assert comfy.device_of(model.transformer.traj_extractor) == HOST  # moved back after use
    assert comfy.loaded == [vae.patcher]  # ComfyUI keeps the VAE after a success, as it decides
    comfy.unload(vae.patcher)

    for step in ("encode_flow_video", "guidance_from_latents"):
        monkeypatch.setattr(motion_nodes, step, raising)
        with pytest.raises(Boom):
            run_motion(pack, model, vae)
        nothing_of_ours_on_the_device(comfy, model, vae)


def test_loads_carry_the_activation_estimate(pack, comfy, monkeypatch):
    """load_models gets the node's activation bytes (from tora_model.memory_estimate) beside the weights."""
    estimate = pack.tora_model.memory_estimate
    model, vae = models(pack, managed=True)
    monkeypatch.setattr(pack.nodes.sampling_nodes, "sample_latents", raising)
    with pytest.raises(Boom):
        run_sampler(pack, model)
    step = dict(dtype=torch.float32, motion=False, weight_upcast=False)
    assert comfy.requests[-1] == (
        estimate.sampler_step_bytes(model.config, W, H, F, 2, **step),
        estimate.sampler_step_bytes(model.config, W, H, F, 1, **step),
    )
    swapped, _ = models(pack, managed=True, swap=1)
    with pytest.raises(Boom):
        run_sampler(pack, swapped)
    resident = pack.tora_model.offload.resident_bytes(
        swapped.transformer, list(swapped.transformer.transformer_blocks)[-1:]
    )
    needed = estimate.sampler_step_bytes(swapped.config, W, H, F, 2, **step)
    assert comfy.requests[-1][0] == needed + resident  # block swap's make_room counts activations too


def test_novram_is_run_by_the_pack_and_a_stray_placement_names_the_flag(pack, comfy, monkeypatch):
    """--novram: ComfyUI would record the model as loaded but move none of its weights, so the pack moves the model
    itself (and back). If weights still end up elsewhere, the error names the flag and block swap."""
    model, vae = models(pack, managed=True)
    comfy.flag = "--novram"
    seen = []
    monkeypatch.setattr(
        pack.nodes.sampling_nodes,
        "decode_latents",
        lambda v, *a, **k: seen.append(comfy.device_of(v)) or torch.zeros(F, H, W, 3),
    )
    run_decode(pack, vae)
    assert seen == [DEVICE] and comfy.loaded == [] and comfy.device_of(vae.vae) == HOST

    comfy.flag = "--lowvram"
    moves_nothing = lambda patchers, *a: comfy.loaded.extend(patchers)  # noqa: E731
    monkeypatch.setattr(pack.nodes.comfy_glue, "load_models", moves_nothing)
    with pytest.raises(pack.tora_model.errors.ConfigError, match=r"--lowvram.*block_swap"):
        run_decode(pack, vae)
    nothing_of_ours_on_the_device(comfy, model, vae)
