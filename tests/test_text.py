"""T5 text encoder: a tiny random T5 and a T5 tokenizer built locally (no network), in every supported layout."""

import logging

import pytest
import torch
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from tora_model.errors import CheckpointError
from tora_model.keymaps import SAT_T5_PREFIX
from tora_model.text import T5TextEncoder, encode_prompt, infer_t5_config, tiny_t5_config

MAX_LENGTH = 12
WORDS = ["▁a", "▁cat", "▁dog", "▁runs", "▁on", "▁the", "▁grass", "▁red", "s", "a", "o", "t"]
PAD, EOS = 0, 1
CONFIG = tiny_t5_config(vocab_size=40, d_model=32, d_ff=48)


def tiny_tokenizer():
    """Unigram T5 tokenizer: <pad>=0, </s>=1, <unk>=2, ▁=3, then WORDS from id 4."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(word, -3.0 - 0.1 * i) for i, word in enumerate(WORDS)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return T5EncoderModel(CONFIG).eval()


@pytest.fixture(scope="module")
def sat_folder(reference, tmp_path_factory):
    """One folder with encoder and tokenizer (the SAT `t5-v1_1-xxl/` layout)."""
    folder = tmp_path_factory.mktemp("t5-v1_1-xxl")
    reference.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def diffusers_root(reference, tmp_path_factory):
    """A pipeline root with `text_encoder/` and `tokenizer/`."""
    root = tmp_path_factory.mktemp("Tora_T2V_diffusers")
    reference.save_pretrained(root / "text_encoder")
    tiny_tokenizer().save_pretrained(root / "tokenizer")
    return root


def direct(reference, prompts, attention_mask=False):
    """What the official code does, written out with transformers directly."""
    batch = tiny_tokenizer()(
        prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
    )
    mask = batch["attention_mask"] if attention_mask else None
    with torch.no_grad():
        return reference(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state


PROMPTS = ["a cat runs on the grass", "the red dog"]


def test_tokenize_pads_to_max_length_with_eos(sat_folder):
    encoder = T5TextEncoder.load(sat_folder, dtype=torch.float32, max_length=MAX_LENGTH)
    ids = encoder.tokenize(PROMPTS)
    assert ids.tolist() == [
        [4, 5, 7, 8, 9, 10, EOS, PAD, PAD, PAD, PAD, PAD],
        [9, 11, 6, EOS, PAD, PAD, PAD, PAD, PAD, PAD, PAD, PAD],
    ]


def test_folder_encode_equals_transformers_without_mask(sat_folder, reference):
    encoder = T5TextEncoder.load(sat_folder, dtype=torch.float32, max_length=MAX_LENGTH)
    out = encoder.encode(PROMPTS)
    assert out.shape == (2, MAX_LENGTH, CONFIG.d_model) and out.dtype == torch.float32
    torch.testing.assert_close(out, direct(reference, PROMPTS), rtol=0, atol=0)
    # No attention mask: the padded positions change the result, so a masked encoder would differ.
    assert (out - direct(reference, PROMPTS, attention_mask=True)).abs().max() > 1e-3


def test_diffusers_root_loads_the_same(diffusers_root, reference):
    encoder = T5TextEncoder.load(diffusers_root, dtype=torch.float32, max_length=MAX_LENGTH)
    torch.testing.assert_close(encoder.encode(PROMPTS), direct(reference, PROMPTS), rtol=0, atol=0)
    encoder = T5TextEncoder.load(diffusers_root / "text_encoder", dtype=torch.float32, max_length=MAX_LENGTH)
    torch.testing.assert_close(encoder.encode(PROMPTS), direct(reference, PROMPTS), rtol=0, atol=0)


def test_sat_engine_file_with_prefix(sat_folder, reference, tmp_path):
    """The T5 inside an official SAT `{'module': ...}` pickle, next to DiT tensors, loads to identical outputs."""
    module = {SAT_T5_PREFIX + k: v.clone() for k, v in reference.state_dict().items()}
    module["model.diffusion_model.patch_embed.proj.weight"] = torch.zeros(4, 4)
    module["first_stage_model.encoder.conv_in.weight"] = torch.zeros(2)
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": module}, path)
    encoder = T5TextEncoder.load(path, tokenizer=sat_folder, dtype=torch.float32, max_length=MAX_LENGTH)
    torch.testing.assert_close(encoder.encode(PROMPTS), direct(reference, PROMPTS), rtol=0, atol=0)
    assert encoder.encoder.encoder.embed_tokens is encoder.encoder.shared
    assert not any(t.is_meta for t in [*encoder.parameters(), *encoder.buffers()])


def test_plain_safetensors_and_state_dict(sat_folder, reference, tmp_path):
    weights = {k: v.clone() for k, v in reference.state_dict().items() if k != "encoder.embed_tokens.weight"}
    path = tmp_path / "t5.safetensors"
    save_file(weights, str(path))
    from_file = T5TextEncoder.load(path, tokenizer=sat_folder, dtype=torch.float32, max_length=MAX_LENGTH)
    torch.testing.assert_close(from_file.encode(PROMPTS), direct(reference, PROMPTS), rtol=0, atol=0)
    default_dtype = T5TextEncoder.load(weights, tokenizer=sat_folder, max_length=MAX_LENGTH)
    assert default_dtype.encoder.shared.weight.dtype == torch.bfloat16  # the official precision
    assert default_dtype.encode(PROMPTS).dtype == torch.bfloat16


def test_config_inferred_from_shapes(reference):
    inferred = infer_t5_config(reference.state_dict())
    for field in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
        assert getattr(inferred, field) == getattr(CONFIG, field), field
    assert inferred.relative_attention_num_buckets == 8 and inferred.is_gated_act


def test_weights_without_tokenizer_say_what_to_pass(reference):
    with pytest.raises(CheckpointError, match="pass tokenizer="):
        T5TextEncoder.load(dict(reference.state_dict()), dtype=torch.float32)


def test_incomplete_weights_are_named(reference, sat_folder):
    weights = dict(reference.state_dict())
    del weights["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. \['encoder\.block\.1\.layer\.1"):
        T5TextEncoder.load(weights, tokenizer=sat_folder)


def test_wrong_config_names_the_tensor(reference, sat_folder):
    with pytest.raises(
        CheckpointError, match=r"DenseReluDense\.wi_0\.weight has shape \(48, 32\) in the file but \(64, 32\)"
    ):
        T5TextEncoder.load(
            dict(reference.state_dict()),
            tokenizer=sat_folder,
            config=T5Config(**{**CONFIG.to_dict(), "d_ff": 64}),
        )


def test_non_t5_weights_are_rejected(sat_folder):
    with pytest.raises(CheckpointError, match="no T5 encoder found"):
        T5TextEncoder.load({"model.diffusion_model.x": torch.zeros(1)}, tokenizer=sat_folder)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        T5TextEncoder.load(tmp_path)


def test_uncond_is_zeros_or_the_encoded_negative(sat_folder, reference):
    encoder = T5TextEncoder.load(sat_folder, dtype=torch.float32, max_length=MAX_LENGTH)
    cond, uncond = encode_prompt(encoder, PROMPTS)
    torch.testing.assert_close(cond, direct(reference, PROMPTS), rtol=0, atol=0)
    assert uncond.shape == cond.shape and not uncond.any()
    _, empty = encode_prompt(encoder, "a cat", negative_prompt="")
    torch.testing.assert_close(empty, direct(reference, [""]), rtol=0, atol=0)
    assert empty.abs().max() > 0.01


def test_long_prompt_is_truncated_with_a_warning(sat_folder, caplog):
    encoder = T5TextEncoder.load(sat_folder, dtype=torch.float32, max_length=MAX_LENGTH)
    with caplog.at_level(logging.WARNING, logger="tora_model.text"):
        ids = encoder.tokenize(["a cat " * 10])
    assert ids.shape == (1, MAX_LENGTH) and ids[0, -1].item() == EOS
    assert "has 21 T5 tokens; only the first 12 are used" in caplog.text
