"""T5 v1.1 XXL text encoder of Tora / CogVideoX-5B (transformers' T5EncoderModel + T5 tokenizer), never downloading.

Source: `tora_spec.md` §1.4 (SAT `FrozenT5Embedder`: max_length 226, padding to max length, truncation, NO attention
mask, output `last_hidden_state`), §6.1 step 4 (official unconditional context = all zeros) and §6.2 / §9.3 (the
diffusers pipeline encodes "" instead).

Weights come from
  * a transformers folder: `config.json` + weights (the diffusers `text_encoder/`, or the SAT `t5-v1_1-xxl/` folder),
    or a diffusers pipeline root holding `text_encoder/` and `tokenizer/`;
  * a single file or a state dict with HF T5 names — e.g. the official SAT engine file, whose T5 sits under
    `conditioner.embedders.0.transformer.` (stripped here). Such sources hold no tokenizer, so `tokenizer=` must name
    a tokenizer folder (`t5-v1_1-xxl/` of the Tora download or `Tora_T2V_diffusers/tokenizer/`). The model is built on
    the meta device and the tensors are assigned (memory-mapped pickles stay mapped when no cast is needed).

Layout: prompts → token ids [B, L] (L = max_length, 226 for the release) → embeddings [B, L, d_model] (4096).
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoTokenizer, T5Config, T5EncoderModel

from .checkpoint_files import read_state_dict, refused_pickle
from .errors import CheckpointError, ConfigError
from .keymaps import SAT_T5_PREFIX

log = logging.getLogger(__name__)

MAX_LENGTH = 226
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
SHARED_KEY = "shared.weight"
EMBED_KEY = "encoder.embed_tokens.weight"  # tied to `shared` in every T5 encoder
IGNORED_PREFIXES = ("decoder.", "lm_head.")  # a full T5 (encoder-decoder) file also carries these
T5_SOURCE_HINT = (
    "the T5 v1.1 XXL encoder ships as `t5-v1_1-xxl/` in the Tora download, as `text_encoder/` + `tokenizer/` in "
    "Tora_T2V_diffusers, and inside the official SAT `mp_rank_00_model_states.pt`"
)


def _is_tokenizer_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


def _encoder_folder(folder: Path) -> Path:
    """The folder holding the encoder's config.json: `folder` itself or a pipeline root's `text_encoder/`."""
    for candidate in (folder, folder / "text_encoder"):
        if (candidate / "config.json").is_file():
            return candidate
    raise CheckpointError(
        f"{folder} is not a transformers T5 folder: no config.json in it or in {folder / 'text_encoder'}. "
        f"Point at the folder with config.json and the weights; {T5_SOURCE_HINT}."
    )


def _tokenizer_folder(tokenizer: str | Path | None, encoder_folder: Path | None) -> Path:
    """The explicit tokenizer folder, or the one beside a transformers encoder folder (itself or ../tokenizer)."""
    if tokenizer is not None:
        folder = Path(tokenizer)
        if not _is_tokenizer_folder(folder):
            raise CheckpointError(
                f"tokenizer folder {folder} has none of {TOKENIZER_FILES}; point at the T5 tokenizer folder "
                f"({T5_SOURCE_HINT})"
            )
        return folder
    if encoder_folder is None:
        raise CheckpointError(
            "these T5 weights come without a tokenizer (the SAT file and single .safetensors files hold none); "
            f"pass tokenizer=<folder with {' or '.join(TOKENIZER_FILES)}> — {T5_SOURCE_HINT}"
        )
    for candidate in (encoder_folder, encoder_folder.parent / "tokenizer"):
        if _is_tokenizer_folder(candidate):
            return candidate
    raise CheckpointError(
        f"no T5 tokenizer found in {encoder_folder} or {encoder_folder.parent / 'tokenizer'} (looked for "
        f"{TOKENIZER_FILES}); pass tokenizer=<folder> — {T5_SOURCE_HINT}"
    )


def load_tokenizer(folder: Path):
    """A transformers T5 tokenizer from a local folder (never downloads)."""
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, ImportError) as err:
        raise CheckpointError(
            f"could not load the T5 tokenizer from {folder}: {err}. A folder with only spiece.model needs the "
            "`sentencepiece` package (pip install sentencepiece); transformers >= 4.44.2 is required."
        ) from None


class _Renamed(Mapping):
    """Read-only view `name -> source[plan[name]]`; nothing is read until a tensor is looked up."""

    def __init__(self, source: Mapping[str, torch.Tensor], plan: dict[str, str]) -> None:
        self._source, self._plan = source, plan

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._source[self._plan[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._plan)

    def __len__(self) -> int:
        return len(self._plan)


def t5_weights(state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Lazy HF T5-encoder view of a state dict: SAT prefix stripped, decoder/lm_head dropped, one input embedding."""
    prefix = SAT_T5_PREFIX if any(k.startswith(SAT_T5_PREFIX) for k in state_dict) else ""
    plan = {k[len(prefix) :]: k for k in state_dict if k.startswith(prefix)}
    ignored = [k for k in plan if k.startswith(IGNORED_PREFIXES)]
    if ignored:
        log.info("T5 weights: ignoring %d decoder/lm_head tensors (only the encoder is used)", len(ignored))
    plan = {k: v for k, v in plan.items() if not k.startswith(IGNORED_PREFIXES)}
    embedding = plan.pop(EMBED_KEY, None)  # the same tensor as `shared` whenever both are stored
    if SHARED_KEY not in plan and embedding is not None:
        plan[SHARED_KEY] = embedding
    if SHARED_KEY not in plan:
        raise CheckpointError(
            f"no T5 encoder found: neither {SHARED_KEY!r} nor {EMBED_KEY!r} (nor {SAT_T5_PREFIX}…) is in the "
            f"{len(state_dict)} tensors given (first keys: {sorted(state_dict)[:4]}); {T5_SOURCE_HINT}"
        )
    return _Renamed(state_dict, plan)


def infer_t5_config(weights: Mapping[str, torch.Tensor]) -> T5Config:
    """T5 v1.1 encoder config from tensor shapes (max distance 128 and eps 1e-6 are the v1.1 values)."""
    attention = "encoder.block.0.layer.0.SelfAttention."
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in weights
    ff_key = "encoder.block.0.layer.1.DenseReluDense." + ("wi_0.weight" if gated else "wi.weight")
    needed = [SHARED_KEY, attention + "q.weight", attention + "relative_attention_bias.weight", ff_key]
    missing = [k for k in needed if k not in weights]
    if missing:
        raise CheckpointError(f"cannot infer the T5 config: missing {missing}; pass config= (a T5Config)")
    vocab, d_model = weights[SHARED_KEY].shape
    buckets, heads = weights[attention + "relative_attention_bias.weight"].shape
    inner = weights[attention + "q.weight"].shape[0]
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    return T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=inner // heads,
        d_ff=weights[ff_key].shape[0],
        num_layers=len(layers),
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu" if gated else "relu",
        layer_norm_epsilon=1e-6,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
    )


def t5_xxl_config() -> T5Config:
    """The T5 v1.1 XXL encoder Tora uses (4.76 B parameters): 24 layers, d_model 4096, 64 heads × 64, gated-GELU
    d_ff 10240, vocabulary 32128 — e.g. to build it on the meta device without its weights."""
    return T5Config(
        vocab_size=32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
    )


def tiny_t5_config(vocab_size: int, d_model: int, d_ff: int | None = None) -> T5Config:
    """A 2-layer, 4-head gated-GELU (v1.1-style) T5 encoder config for the demo and tests; d_ff defaults to 2·d_model."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model if d_ff is None else d_ff,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
    )


def _encoder_from_weights(
    weights: Mapping[str, torch.Tensor],
    config: T5Config | None,
    dtype: torch.dtype,
    device: torch.device | None,
) -> T5EncoderModel:
    """Build on meta, assign the (cast) tensors, re-tie the input embedding; names any key mismatch."""
    config = config or infer_t5_config(weights)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    expected = set(model.state_dict()) - {EMBED_KEY}
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"T5 weights do not fit a T5 encoder of {config.num_layers} layers × d_model {config.d_model}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
            f"Use the T5 v1.1 XXL encoder weights; {T5_SOURCE_HINT}."
        )
    targets = model.state_dict()
    tensors = {}
    # One read per tensor, cast and placed right away: peak ≈ model + one tensor.
    for name in sorted(expected):
        tensor = weights[name]
        if tuple(tensor.shape) != tuple(targets[name].shape):
            raise CheckpointError(
                f"T5 tensor {name} has shape {tuple(tensor.shape)} in the file but {tuple(targets[name].shape)} in "
                "the model built for it; pass the matching config="
            )
        tensors[name] = tensor.to(device=device or tensor.device, dtype=dtype)
    model.load_state_dict(tensors, strict=False, assign=True)
    model.set_input_embeddings(model.shared)  # encoder.embed_tokens is the same module as `shared`
    return model


def _encoder_from_folder(folder: Path, dtype: torch.dtype, device: torch.device | None) -> T5EncoderModel:
    if int(transformers.__version__.split(".")[0]) >= 5:
        options = {"dtype": dtype}  # transformers 5 always builds on meta and fills
    else:  # 4.x: meta build + fill needs the optional `accelerate` package
        options = {
            "torch_dtype": dtype,
            "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None,
        }
    try:
        model = T5EncoderModel.from_pretrained(str(folder), local_files_only=True, **options)
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        # A .bin pickle holding more than tensors is refused by torch's weights-only load: our message, not torch's.
        raise refused_pickle(folder, err) or CheckpointError(
            f"could not load the T5 encoder from {folder}: {err}. {T5_SOURCE_HINT}."
        ) from None
    return model.to(device) if device is not None else model


class T5TextEncoder(nn.Module):
    """Tokenizer + T5 encoder: prompts → last hidden states [B, max_length, d_model], exactly as the official code."""

    def __init__(self, encoder: T5EncoderModel, tokenizer, max_length: int = MAX_LENGTH) -> None:
        super().__init__()
        if max_length < 1:
            raise ConfigError(f"max_length must be a positive token count (226 for Tora), got {max_length}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def load(
        cls,
        source: str | Path | Mapping[str, torch.Tensor],
        *,
        tokenizer: str | Path | None = None,
        config: T5Config | None = None,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
        max_length: int = MAX_LENGTH,
    ) -> T5TextEncoder:
        """From a transformers folder, a weights file (SAT engine file or plain T5), or a state dict; see module doc.

        dtype: bf16 by default (the official precision); T5 v1.1 overflows in float16.
        """
        device = torch.device(device) if device is not None else None
        if isinstance(source, Mapping):
            encoder = _encoder_from_weights(t5_weights(source), config, dtype, device)
            folder = None
        elif Path(source).is_dir():
            folder = _encoder_folder(Path(source))
            encoder = _encoder_from_folder(folder, dtype, device)
        else:
            encoder = _encoder_from_weights(t5_weights(read_state_dict(source)), config, dtype, device)
            folder = None
        return cls(encoder, load_tokenizer(_tokenizer_folder(tokenizer, folder)), max_length)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids [B, max_length] int64: EOS appended, padded with <pad>, truncated (with a warning)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        for i, ids in enumerate(self.tokenizer(list(prompts), truncation=False)["input_ids"]):
            if len(ids) > self.max_length:
                log.warning(
                    "prompt %d has %d T5 tokens; only the first %d are used", i, len(ids), self.max_length
                )
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        return batch["input_ids"]  # [B, L]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] → last hidden state [B, L, d_model]; no attention mask, as in training."""
        return self.encoder(input_ids=input_ids).last_hidden_state

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Prompts → embeddings [B, max_length, d_model] in the encoder's dtype, on `device` (default: its own)."""
        device = device if device is not None else self.encoder.shared.weight.device
        return self(self.tokenize(prompts).to(device))


def encode_prompt(
    encoder: T5TextEncoder, prompts: str | Sequence[str], negative_prompt: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) text contexts [B, max_length, d_model].

    negative_prompt=None gives the official SAT unconditional context, all zeros; a string (diffusers: "") is
    encoded instead, one copy per prompt.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    cond = encoder.encode(prompts)  # [B, L, D]
    if negative_prompt is None:
        return cond, torch.zeros_like(cond)
    return cond, encoder.encode([negative_prompt] * len(prompts))
