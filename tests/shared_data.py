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
