"""Shared fixtures: the class catalogue and a tiny synthetic dataset in the real on-disk layout.

``tiny_root`` is generated once per test session (per xdist worker): 6 people, 12 images of 256 px,
seed 0 -> 4 train IDs and 2 test IDs, bent wrists in both splits. Treat it as read-only; copy it
(``shutil.copytree``) before changing anything.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402  (the environment must be set before any hub library loads)

import pytest  # noqa: E402
import yaml  # noqa: E402

from mmseg_text.catalogue import ClassCatalogue, load_catalogue  # noqa: E402
from mmseg_text.data.synthetic import generate_dataset  # noqa: E402

from . import runs  # noqa: E402

TINY_IDS = 6
TINY_SIZE = 256
TINY_SEED = 0


@pytest.fixture(scope="session")
def catalogue() -> ClassCatalogue:
    return load_catalogue()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_synthetic")
    generate_dataset(root, ids=TINY_IDS, size=TINY_SIZE, seed=TINY_SEED, progress=False)
    return root


@pytest.fixture
def tiny_config(tiny_root, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(runs.tiny_config_dict(tiny_root, tmp_path / "run", tmp_path / "cache")))
    return path
