"""The trained tiny Tora bundled in the pack's models/tiny_tora/: where it is, a skip marker for tests that need it,
and the pack loaded with an empty user models folder so that only the bundled models/ can answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.test_nodes import PACK_ROOT, load_pack

BUNDLED_TINY = PACK_ROOT / "models" / "tiny_tora"

needs_bundled_tiny = pytest.mark.skipif(
    not (BUNDLED_TINY / "transformer.safetensors").is_file(),
    reason=f"no trained tiny Tora in {BUNDLED_TINY}; train with `python -m tora_model.tiny.train all --seed 0`",
)


@contextmanager
def pack_with_bundled_models_only(user_models: Path) -> Iterator[object]:
    """The pack with TORA_MODELS_DIR pointing at the empty `user_models` folder, restored afterwards."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TORA_MODELS_DIR", str(user_models))
    try:
        yield load_pack()
    finally:
        mp.undo()
