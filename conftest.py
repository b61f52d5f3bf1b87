"""pytest set-up at the repository root: the root is the ComfyUI pack, not a test package.

The root `__init__.py` is what ComfyUI imports as `custom_nodes/<folder>` (relative imports, any folder name). pytest
would collect the root as a package and import that file under the folder's name; with `--import-mode=importlib`
and a folder name that is not a Python identifier (`ComfyUI-Tora-main`, what a GitHub zip unpacks to) it is
imported without a parent package and its relative import fails, erroring every test. So the root is collected as a
plain directory. The hook is registered as a global plugin because pytest creates the root's node with the hooks of
the folder above it, which never see this file's own hooks.
"""

from __future__ import annotations

from pathlib import Path

import pytest


class _PackRootIsADirectory:
    """Collects the repository root as `pytest.Dir` instead of `pytest.Package`."""

    @staticmethod
    def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if path == parent.config.rootpath:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_PackRootIsADirectory(), "tora-pack-root-is-a-directory")
