"""Block swap (tora_model/block_swap.py via offload.enable_block_swap) and fp8 storage on the CPU.

Outputs with block swap must equal those without, bit for bit: the swapped blocks run on copies of host masters made
once, so any wrong offset, dtype or restore would change numbers. On the CPU the copies are synchronous; a `meta`
compute device stands in for a GPU where the test must see which device the block parameters are on afterwards.
Prefetching (real CUDA only by default) is forced on where the bookkeeping of copies issued ahead is tested.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.weights import randomise
from tora_model.block_swap import ALIGNMENT
from tora_model.config import ToraConfig
from tora_model.errors import ConfigError
from tora_model.offload import enable_block_swap, move_resident, resident_bytes, store_block_linears
from tora_model.st_dit import STDiTTransformer
from tora_model.transformer import build_transformer

CPU, META = torch.device("cpu"), torch.device("meta")
SHAPE = (2, 3, 16, 8, 12)  # B, T, C, H, W: the tiny presets' latent grid


def tiny(preset: str = "tiny", layers: int | None = None, dtype=torch.float32) -> torch.nn.Module:
    config = ToraConfig.preset(preset)
    config = config if layers is None else config.replace(num_layers=layers)
    model = STDiTTransformer(config).eval() if preset == "tiny_st" else build_transformer(config)
    randomise(model, seed=0)
    return model.to(dtype)


def inputs(model: torch.nn.Module, device: torch.device = CPU) -> dict:
    gen = torch.Generator().manual_seed(1)
    dtype = model.dtype
    latents = torch.randn(SHAPE, generator=gen)
    features = model.extract_motion(torch.randn(SHAPE, generator=gen).to(dtype))
    args = dict(
        latents=latents,
        timestep=torch.tensor([999, 37]),
        text_embeds=torch.randn(SHAPE[0], 16, model.config.text_dim, generator=gen),
        motion_features=features,
    )
    if model.config.is_i2v:
        args["image_latents"] = torch.randn(SHAPE, generator=gen)
    return {k: [f.to(device) for f in v] if k == "motion_features" else v.to(device) for k, v in args.items()}


def run(model: torch.nn.Module, args: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**args)


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def swapped_copy(model, count, device=CPU, prefetch=None):
    swapped = copy.deepcopy(model)
    swap = enable_block_swap(swapped.transformer_blocks, count, device, CPU, prefetch=prefetch)
    return swapped, swap


@pytest.mark.parametrize(
    ("preset", "layers", "count", "prefetch"),
    [
        ("tiny", None, 0, None),
        ("tiny", None, 1, None),
        ("tiny", None, 2, None),  # every block
        ("tiny", 4, 3, None),
        ("tiny", 4, 3, True),
        ("tiny", 4, 4, True),
        ("tiny_st", None, 2, None),
        ("tiny_st", None, 3, True),
    ],
)
def test_block_swap_output_is_bit_identical(preset, layers, count, prefetch):
    model = tiny(preset, layers)
    args = inputs(model)
    reference = run(model, args)
    swapped, swap = swapped_copy(model, count, prefetch=prefetch)
    blocks = list(swapped.transformer_blocks)
    assert len(swap) == count and list(swap) == blocks[len(blocks) - count :]
    for _ in range(2):  # the second forward starts from the state the first one left
        assert torch.equal(run(swapped, args), reference)
    assert swap.stats.forwards == (2 if count else 0)
    assert swap.stats.on_device_bytes == 0  # nothing of a swapped block outlives its forward


def test_block_swap_with_fp8_storage_is_bit_identical_and_copies_fp8():
    model = tiny(layers=4, dtype=torch.bfloat16)
    store_block_linears(model.transformer_blocks, torch.float8_e4m3fn)
    args = inputs(model)
    reference = run(model, args)
    swapped, swap = swapped_copy(model, 3, prefetch=True)
    assert torch.equal(run(swapped, args), reference)
    dtypes = {p.dtype for block in swap for p in block.parameters()}
    assert torch.float8_e4m3fn in dtypes  # the masters hold fp8: fp8 storage was applied first
    payload = sum(tensor_bytes(block) for block in swap)
    tensors = sum(1 for block in swap for _ in block.parameters())
    assert payload <= swap.stats.block_bytes < payload + ALIGNMENT * tensors  # at most the alignment padding
    assert swap.stats.last_forward_host_to_device_bytes == swap.stats.block_bytes


def test_fp8_storage_after_block_swap_is_refused():
    """Replacing weights after enable would be undone by the masters; the next forward says so instead."""
    model = tiny(dtype=torch.bfloat16)
    swap = enable_block_swap(model.transformer_blocks, 1, CPU, CPU)
    store_block_linears(model.transformer_blocks, torch.float8_e4m3fn)
    for _ in range(2):  # the refusal does not undo the replacement, so it repeats
        with pytest.raises(ConfigError, match="apply fp8 storage .*before enable_block_swap"):
            run(model, inputs(model))
    assert swap.stats.on_device_bytes == 0


def test_bytes_copied_per_forward_are_the_swapped_blocks_and_nothing_returns():
    model = tiny(layers=4)
    swapped, swap = swapped_copy(model, 3)
    args = inputs(model)
    for _ in range(3):
        run(swapped, args)
    stats = swap.stats
    # tiny fp32 tensors need no alignment padding
    assert stats.block_bytes == sum(tensor_bytes(block) for block in swap)
    assert stats.host_bytes == stats.block_bytes and stats.pinned_bytes == 0  # no CUDA: pageable masters
    assert stats.last_forward_host_to_device_bytes == stats.block_bytes
    assert stats.host_to_device_bytes == 3 * stats.block_bytes
    assert stats.device_to_host_bytes == 0
    assert stats.peak_on_device_bytes == max(tensor_bytes(block) for block in swap)  # one block at a time


def test_prefetch_keeps_at_most_two_blocks_on_the_device():
    model = tiny(layers=4)
    swapped, swap = swapped_copy(model, 3, META, prefetch=True)
    move_resident(swapped, swap, META)
    run(swapped, inputs(model, META))
    assert swap.stats.peak_on_device_bytes == 2 * tensor_bytes(swap[0])
    assert swap.stats.last_forward_host_to_device_bytes == swap.stats.block_bytes
    two_blocks = 2 * tensor_bytes(swap[0])  # the one running and the one copied ahead
    assert resident_bytes(swapped, swap) == tensor_bytes(swapped) - swap.stats.block_bytes + two_blocks


def test_released_5b_masters_are_exact_in_bf16_and_fp8():
    """At the released size every tensor is a multiple of 64 bytes: a step copies exactly the swapped weights."""
    for fp8 in (False, True):
        model = build_transformer(ToraConfig.preset("cogvideox_5b_t2v"), device="meta", dtype=torch.bfloat16)
        if fp8:
            store_block_linears(model.transformer_blocks, torch.float8_e4m3fn)
        swap = enable_block_swap(model.transformer_blocks, 20, META, META)
        block = 132_274_688 if fp8 else 264_395_264  # 126.1 / 252.1 MiB
        assert swap.stats.block_bytes == 20 * block == sum(tensor_bytes(b) for b in swap)


def raise_inside(block: torch.nn.Module):
    """A forward hook on the block's MLP that raises: the failure happens inside the swapped block's forward."""
    mlp = block.ff if hasattr(block, "ff") else block.mlp

    def fail(*_):
        raise RuntimeError("injected failure")

    return mlp.register_forward_hook(fail)


def on_meta(swap) -> list[str]:
    return [name for block in swap for name, p in block.named_parameters() if p.device.type == "meta"]


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("where", [0, 1, 2, "resident"])
def test_a_failing_block_leaves_nothing_on_the_device(where, prefetch):
    model = tiny(layers=4)
    swapped, swap = swapped_copy(model, 3, META, prefetch=prefetch)
    move_resident(swapped, swap, META)
    args = inputs(model, META)
    target = swapped.transformer_blocks[0] if where == "resident" else swap[where]
    hook = raise_inside(target)
    with pytest.raises(RuntimeError, match="injected failure"):
        run(swapped, args)
    assert on_meta(swap) == [] and swap.stats.on_device_bytes == 0
    hook.remove()
    run(swapped, args)  # the next forward works and again leaves nothing behind
    assert on_meta(swap) == [] and swap.stats.on_device_bytes == 0


def test_release_drops_what_an_interrupt_left_and_the_next_forward_recovers():
    """KeyboardInterrupt bypasses nn.Module's always-called hooks: `release` (or the next forward) cleans up."""
    model = tiny(layers=4)
    swapped, swap = swapped_copy(model, 3, META, prefetch=True)
    move_resident(swapped, swap, META)
    args = inputs(model, META)

    def interrupt(*_):
        raise KeyboardInterrupt

    hook = swap[1].ff.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(swapped, args)
    # stranded for now, as the old hooks stranded a block after any failure
    assert on_meta(swap) and swap.stats.on_device_bytes > 0
    swap.release()
    assert on_meta(swap) == [] and swap.stats.on_device_bytes == 0
    with pytest.raises(KeyboardInterrupt):
        run(swapped, args)
    hook.remove()
    run(swapped, args)
    assert on_meta(swap) == [] and swap.stats.on_device_bytes == 0


def test_close_restores_ordinary_tensors():
    model = tiny()
    args = inputs(model)
    reference = run(model, args)
    swapped, swap = swapped_copy(model, 2)
    swap.close()
    assert torch.equal(run(swapped, args), reference)
    assert swap.stats.forwards == 0 and len(swap) == 0  # hooks gone
    for param in swapped.transformer_blocks.parameters():  # each its own storage, not a view of a master
        assert param.untyped_storage().nbytes() == param.numel() * param.element_size()


def test_block_count_outside_the_model_is_refused():
    model = tiny()
    with pytest.raises(ConfigError, match="between 0 and 2 .* got 3"):
        enable_block_swap(model.transformer_blocks, 3, CPU, CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned masters and side-stream prefetch need CUDA")
def test_cuda_prefetch_from_pinned_masters_is_bit_identical():
    cuda = torch.device("cuda")
    model = tiny(layers=4, dtype=torch.bfloat16)
    reference = run(model.to(cuda), inputs(model, cuda))
    swapped = copy.deepcopy(model).cpu()
    swap = enable_block_swap(swapped.transformer_blocks, 3, cuda, CPU)
    move_resident(swapped, swap, cuda)
    args = inputs(model, cuda)
    for _ in range(2):
        assert torch.equal(run(swapped, args), reference)
    torch.cuda.synchronize()
    stats = swap.stats
    assert stats.prefetch and stats.pinned_bytes >= stats.block_bytes
    assert all(p.device.type == "cpu" and p.is_pinned() for block in swap for p in block.parameters())
    assert stats.last_forward_host_to_device_bytes == stats.block_bytes and stats.device_to_host_bytes == 0
    swap.close()
