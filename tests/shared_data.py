"""Where the reference data of `../shared` sits beside the repository, and skip markers for tests that need it.

The official trajectories, fixtures and tensor manifests are read from there, never copied into the project.
"""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"
MANIFESTS = REFERENCE / "manifests"
TRAJS = REFERENCE / "trajs"
FIXTURE = REFERENCE / "fixtures" / "tora_reference_values.json"

needs_shared = pytest.mark.skipif(not FIXTURE.exists(), reason=f"reference data not found at {SHARED}")
needs_manifests = pytest.mark.skipif(
    not MANIFESTS.is_dir(), reason=f"reference manifests not found at {MANIFESTS} (../shared beside the repo)"
)


def read_manifest(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name → (shape, dtype) from one `.tsv` of the reference manifests; skips the test when it is absent."""
    path = MANIFESTS / name
    if not path.is_file():
        pytest.skip(
            f"reference manifest {path} is absent (the shared/ folder must sit beside the repository)"
        )
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            rows[key] = (tuple(int(n) for n in shape.strip("[]").split(",") if n.strip()), dtype)
    return rows


def manifest_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from one reference manifest (see `read_manifest`)."""
    return {key: shape for key, (shape, _dtype) in read_manifest(name).items()}
