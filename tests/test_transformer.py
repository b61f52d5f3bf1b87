"""ToraTransformer against diffusers' CogVideoXTransformer3DModel at a tiny config, with every weight randomised.

diffusers is the test-only numerical reference: same weights (ours minus the Tora modules), fp32, max abs diff ≤ 1e-5.
Motion is checked by hooking the fusers onto the video attention input of the diffusers blocks (the fuser formula
itself is tested in test_motion_modules.py).
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from tests.references import cogvideox_transformer_kwargs
from tests.weights import randomise
from tora_model import ConfigError
from tora_model.config import ToraConfig
from tora_model.embeddings import cached_rope_tables, rope_tables
from tora_model.transformer import ToraTransformer, build_transformer

diffusers = pytest.importorskip("diffusers", reason="diffusers is the test-only numerical reference")
from diffusers import CogVideoXTransformer3DModel  # noqa: E402
from diffusers.models.embeddings import get_3d_rotary_pos_embed  # noqa: E402

TORA_PREFIXES = ("traj_extractor.", "fuser.")
BATCH, FRAMES, HEIGHT, WIDTH = 2, 3, 8, 12  # the tiny presets' sample grid (9 pixel frames → 3 latent frames)
TEXT_LEN = 16


def tiny_model(preset: str = "tiny", seed: int = 0, **changes) -> ToraTransformer:
    # diffusers' norm_out uses eps 1e-5 where SAT uses 1e-6.
    model = build_transformer(ToraConfig.preset(preset).replace(out_norm_eps=1e-5, **changes))
    randomise(model, seed)
    return model


def reference_model(model: ToraTransformer, learned_pos: bool = False) -> CogVideoXTransformer3DModel:
    cfg = model.config
    reference = CogVideoXTransformer3DModel(
        **cogvideox_transformer_kwargs(cfg), use_learned_positional_embeddings=learned_pos
    ).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(TORA_PREFIXES)}
    if not learned_pos:
        state.pop("patch_embed.pos_embedding", None)
    reference.load_state_dict(state, strict=True)
    return reference


def inputs(seed: int = 1, i2v: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = dict(
        latents=torch.randn(BATCH, FRAMES, 16, HEIGHT, WIDTH, generator=gen),
        timestep=torch.tensor([999, 37]),
        text_embeds=torch.randn(BATCH, TEXT_LEN, 32, generator=gen),
    )
    if i2v:
        out["image_latents"] = torch.randn(BATCH, FRAMES, 16, HEIGHT, WIDTH, generator=gen)
    return out


def run_reference(reference: CogVideoXTransformer3DModel, args: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = args["latents"]
    if "image_latents" in args:
        hidden = torch.cat([hidden, args["image_latents"]], dim=2)
    grid = (HEIGHT // 2, WIDTH // 2)
    rope = get_3d_rotary_pos_embed(16, ((0, 0), grid), grid, FRAMES, use_real=True)
    return reference(
        hidden_states=hidden,
        encoder_hidden_states=args["text_embeds"],
        timestep=args["timestep"],
        image_rotary_emb=rope,
        return_dict=False,
    )[0]


@torch.no_grad()
@pytest.mark.parametrize(
    ("preset", "learned_pos"), [("tiny", False), ("tiny_i2v", False), ("tiny_i2v", True)]
)
def test_matches_diffusers_cogvideox_without_motion(preset, learned_pos):
    model = tiny_model(preset, use_learned_pos_embed=learned_pos)
    args = inputs(i2v=model.config.is_i2v)
    ours = model(**args)
    expected = run_reference(reference_model(model, learned_pos), args)
    assert ours.shape == (BATCH, FRAMES, 16, HEIGHT, WIDTH)
    assert expected.abs().max() > 0.1  # a live comparison, not two zero tensors
    assert (ours - expected).abs().max() <= 1e-5


@torch.no_grad()
def test_learned_pos_embedding_flag_changes_output_and_defaults_to_official_off():
    args = inputs(i2v=True)
    off = tiny_model("tiny_i2v")
    on = tiny_model("tiny_i2v", use_learned_pos_embed=True)
    assert not ToraConfig.preset("cogvideox_5b_i2v").use_learned_pos_embed
    assert (off(**args) - on(**args)).abs().max() > 1e-3


@torch.no_grad()
def test_plain_cogvideox_build_matches_tora_build_without_motion():
    tora = tiny_model()
    plain = build_transformer(tora.config.replace(has_motion_modules=False))
    plain.load_state_dict({k: v for k, v in tora.state_dict().items() if not k.startswith(TORA_PREFIXES)})
    args = inputs()
    assert torch.equal(plain(**args), tora(**args))


@pytest.mark.parametrize("grid", [(3, 4, 6), (13, 30, 45), (2, 5, 7)])
@pytest.mark.parametrize("head_dim", [16, 64])
def test_rope_tables_equal_diffusers(grid, head_dim):
    frames, height, width = grid
    config = ToraConfig(num_heads=1, head_dim=head_dim, fuser_groups=1)
    cos, sin = rope_tables(grid, config.rope_dims)
    ref_cos, ref_sin = get_3d_rotary_pos_embed(head_dim, ((0, 0), (height, width)), (height, width), frames)
    assert cos.shape == (frames * height * width, head_dim)
    assert (cos - ref_cos).abs().max() <= 1e-5
    assert (sin - ref_sin).abs().max() <= 1e-5


def test_cached_rope_tables_are_built_once_per_grid_and_usable_with_autograd():
    dims = ToraConfig.preset("tiny").rope_dims
    with torch.inference_mode():  # the sampler's context; the shared tables must still be ordinary tensors
        cos, sin = cached_rope_tables((3, 4, 6), dims, torch.device("cpu"), torch.bfloat16)
    again = cached_rope_tables((3, 4, 6), dims, torch.device("cpu"), torch.bfloat16)
    assert again[0] is cos and again[1] is sin
    assert not cos.is_inference() and cos.dtype == torch.bfloat16
    ref_cos, ref_sin = rope_tables((3, 4, 6), dims)
    assert torch.equal(cos, ref_cos.to(torch.bfloat16)) and torch.equal(sin, ref_sin.to(torch.bfloat16))
    other = cached_rope_tables((3, 4, 8), dims, torch.device("cpu"), torch.bfloat16)
    assert other[0].shape == (3 * 4 * 8, 16)
    x = torch.ones(3 * 4 * 6, 16, dtype=torch.bfloat16, requires_grad=True)
    (x * cos).sum().backward()  # saving an inference tensor for backward would raise here
    assert torch.equal(x.grad, cos)


@torch.no_grad()
@pytest.mark.parametrize("preset", ["tiny", "tiny_i2v"])
def test_motion_matches_diffusers_with_spec_fuser_on_attention_input(preset):
    model = tiny_model(preset)
    args = inputs(i2v=model.config.is_i2v)
    motion = torch.randn(BATCH, FRAMES, 16, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(5))
    features = model.extract_motion(motion)
    ours = model(**args, motion_features=features)

    reference = reference_model(model)

    def hook(i):
        # The fuser itself is checked against the spec formula in test_motion_modules.py; this checks where it acts.
        def fuse(_module, fn_args, kwargs):
            kwargs["hidden_states"] = model.fuser[i](kwargs["hidden_states"], features[i])
            return fn_args, kwargs

        return fuse

    for i, block in enumerate(reference.transformer_blocks):
        block.attn1.register_forward_pre_hook(hook(i), with_kwargs=True)
    expected = run_reference(reference, args)
    assert (ours - expected).abs().max() <= 1e-5
    assert (ours - model(**args)).abs().max() > 1e-2  # motion really changed the prediction


@torch.no_grad()
def test_zero_temporal_convs_make_fusers_identity():
    model = tiny_model()
    for fuser in model.fuser:
        for conv in (fuser.flow_gamma_temporal, fuser.flow_beta_temporal):
            conv.weight.zero_()
            conv.bias.zero_()
    args = inputs()
    features = model.extract_motion(torch.randn(BATCH, FRAMES, 16, HEIGHT, WIDTH))
    assert torch.equal(model(**args, motion_features=features), model(**args))


@torch.no_grad()
def test_motion_scale_and_batch_one_features():
    model = tiny_model()
    args = inputs()
    motion = torch.randn(1, FRAMES, 16, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(3))
    single = model.extract_motion(motion)  # [T, C_m, H/2, W/2] per block, shared by cond and uncond
    repeated = model.extract_motion(motion.expand(BATCH, -1, -1, -1, -1))
    assert (
        model(**args, motion_features=single) - model(**args, motion_features=repeated)
    ).abs().max() <= 1e-6
    zero = model(**args, motion_features=single, motion_scale=0.0)
    assert (zero - model(**args)).abs().max() <= 1e-6
    assert (model(**args, motion_features=single, motion_scale=0.5) - zero).abs().max() > 1e-3


@torch.no_grad()
def test_attention_callable_is_used_and_swappable_per_call():
    model = tiny_model()
    args = inputs()
    calls = []

    def counting(q, k, v):
        calls.append(q.shape)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)

    default = model(**args)
    swapped = model(**args, attention_fn=counting)
    assert len(calls) == model.config.num_layers
    assert calls[0] == (BATCH, 2, TEXT_LEN + FRAMES * 4 * 6, 16)
    assert (swapped - default).abs().max() <= 1e-6
    built = build_transformer(model.config, attention_fn=counting)
    built.load_state_dict(model.state_dict())
    built(**args)
    assert len(calls) == 2 * model.config.num_layers


@torch.no_grad()
def test_bfloat16_model_computes_in_bfloat16_close_to_float32():
    model = tiny_model()
    half = build_transformer(model.config, dtype=torch.bfloat16)
    half.load_state_dict(model.state_dict())
    args = inputs()
    features = half.extract_motion(torch.randn(BATCH, FRAMES, 16, HEIGHT, WIDTH))
    assert features[0].dtype == torch.bfloat16
    out = half(**args, motion_features=features)
    assert out.dtype == torch.bfloat16
    reference = model(**args, motion_features=[f.float() for f in features])
    assert (out.float() - reference).abs().max() <= 0.05 * reference.abs().max()


def test_forward_with_autograd_equals_inference_and_backpropagates():
    # Inference rotates q/k in place with out=; with autograd on, the recorded path must give the same numbers.
    model = tiny_model()
    args = inputs()
    latents = args.pop("latents").requires_grad_(True)
    with torch.inference_mode():
        expected = model(latents.detach(), **args)
    out = model(latents, **args)
    assert torch.equal(out.detach(), expected)
    out.square().sum().backward()
    assert latents.grad.abs().max() > 0


@torch.no_grad()
def test_tiny_forward_is_fast_on_cpu():
    model = tiny_model()
    args = inputs()
    features = model.extract_motion(torch.randn(BATCH, FRAMES, 16, HEIGHT, WIDTH))
    model(**args, motion_features=features)  # warm-up
    durations = []
    for _ in range(5):  # the best of five: the CPU is shared, so single runs can stall
        start = time.perf_counter()
        model(**args, motion_features=features)
        durations.append(time.perf_counter() - start)
    assert min(durations) < 1.0


def test_bad_inputs_give_config_errors():
    plain = build_transformer(ToraConfig.preset("tiny").replace(has_motion_modules=False))
    args = inputs()
    features = tiny_model().extract_motion(torch.randn(1, FRAMES, 16, HEIGHT, WIDTH))
    with pytest.raises(ConfigError, match="no Tora motion modules"):
        plain(**args, motion_features=features)
    with pytest.raises(ConfigError, match="no Tora motion modules"):
        plain.extract_motion(torch.randn(1, FRAMES, 16, HEIGHT, WIDTH))
    model = tiny_model()
    with pytest.raises(ConfigError, match="expected 2 motion features"):
        model(**args, motion_features=features[:1])
    with pytest.raises(ConfigError, match="motion features must be"):
        model(**args, motion_features=[f[:, :, :2] for f in features])
    with pytest.raises(ConfigError, match="latents must be"):
        model(**{**args, "latents": args["latents"].transpose(1, 2)})
    with pytest.raises(ConfigError, match="latents must be"):
        model(**{**args, "latents": args["latents"][0]})
    with pytest.raises(ConfigError, match="image-to-video"):
        tiny_model("tiny_i2v")(**args)
    with pytest.raises(ConfigError, match="text-to-video"):
        model(**inputs(i2v=True))
    learned = tiny_model("tiny_i2v", use_learned_pos_embed=True)
    short = {k: v[:, :2] if k.endswith("latents") else v for k, v in inputs(i2v=True).items()}
    for bad in ({**inputs(i2v=True), "text_embeds": torch.zeros(2, 5, 32)}, short):
        with pytest.raises(ConfigError, match="learned positional embedding"):
            learned(**bad)
