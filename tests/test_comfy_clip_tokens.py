"""Tora's 226 T5 tokens from a ComfyUI CLIP of either CLIPLoader type, without ComfyUI.

Core's `sd3` CLIP keeps its T5 tokenizer as `clip.tokenizer.t5xxl`; the `cogvideox` type (newest
Comfy-Org/ComfyUI, `comfy/text_encoders/cogvideo.py`: an SD1Tokenizer wrapper with clip_name "t5xxl") keeps it as
`clip.tokenizer.clip_t5xxl`. Both hold the transformers tokenizer as `.tokenizer`. The stand-ins below have exactly
that layout; the real classes are checked in tests/test_real_comfyui.py.
"""

from __future__ import annotations

import logging

import pytest

from tests.test_nodes import load_pack

LENGTH = 226


class HFTokenizer:
    """Records its call; returns Tora's layout: the words, </s> (1), <pad> (0) up to max_length."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt, max_length, padding, truncation):
        self.calls.append((prompt, max_length, padding, truncation))
        words = [100 + i for i, _ in enumerate(prompt.split())][: max_length - 1] + [1]
        return {"input_ids": words + [0] * (max_length - len(words))}


class Inner:
    def __init__(self):
        self.tokenizer = HFTokenizer()


class Tokenizer:
    def __init__(self, attribute: str | None):
        if attribute is not None:
            setattr(self, attribute, Inner())


class Clip:
    """What the pack uses of a ComfyUI CLIP: tokenize, encode_from_tokens, .tokenizer."""

    def __init__(self, attribute: str | None):
        self.tokenizer = Tokenizer(attribute)
        self.seen = None

    def tokenize(self, prompt):
        words = [(7, 1.0)] * len(prompt.split()) + [(1, 1.0)]
        return {"t5xxl": [words + [(0, 1.0)] * (77 - len(words))]}  # ComfyUI's own 77-token batch

    def encode_from_tokens(self, tokens, return_dict=False):
        self.seen = tokens
        return {"cond": len(tokens["t5xxl"][0])}


@pytest.fixture(scope="module")
def glue():
    return load_pack().nodes.comfy_glue


@pytest.mark.parametrize("attribute", ["t5xxl", "clip_t5xxl"], ids=["sd3", "cogvideox"])
def test_the_t5_tokenizer_is_found_for_both_cliploader_types(glue, attribute, caplog):
    clip = Clip(attribute)
    with caplog.at_level(logging.INFO):
        assert glue.comfy_t5_embeddings(clip, "a red balloon over a valley", LENGTH) == LENGTH
    inner = getattr(clip.tokenizer, attribute).tokenizer
    assert inner.calls == [("a red balloon over a valley", LENGTH, "max_length", True)]
    ids = [token for token, _ in clip.seen["t5xxl"][0]]
    assert ids == [100, 101, 102, 103, 104, 105, 1] + [0] * (
        LENGTH - 7
    )  # the tokenizer's, not ComfyUI's batch
    assert "re-batching" not in caplog.text


def test_without_a_reachable_tokenizer_comfy_tokens_are_rebatched(glue, caplog):
    clip = Clip(None)
    with caplog.at_level(logging.INFO):
        glue.comfy_t5_embeddings(clip, "two words", LENGTH)
    assert [t for t, _ in clip.seen["t5xxl"][0]] == [7, 7, 1] + [0] * (LENGTH - 3)
    assert "re-batching" in caplog.text


def test_messages_name_the_cliploader_type_of_the_running_comfyui(glue):
    assert (
        glue.t5_clip_type() == "sd3"
    )  # no ComfyUI here; a ComfyUI with CLIPType.COGVIDEOX gives "cogvideox"
    tooltip = (
        load_pack().NODE_CLASS_MAPPINGS["ToraTextEncode"].INPUT_TYPES()["required"]["clip"][1]["tooltip"]
    )
    assert "type 'sd3'" in tooltip and "cogvideox" in tooltip
