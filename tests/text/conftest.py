"""Fixtures for the text tests: the class catalogue, a caption builder and tiny random CLIP towers.

No network: downloads are switched off before anything asks for weights.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from mmseg_text.catalogue import load_catalogue  # noqa: E402


def text_cfg(**overrides):
    """A TextConfig-like object (the builder only reads attributes)."""
    values = dict(model="tiny-clip", pretrained=None, hf_path=None)
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.fixture(scope="session", name="text_cfg")
def text_cfg_fixture():
    """The ``text_cfg(**overrides)`` factory, for tests."""
    return text_cfg


@pytest.fixture(scope="session")
def catalogue():
    return load_catalogue()


@pytest.fixture(scope="session")
def tiny_tower():
    from mmseg_text.text import build_text_tower

    return build_text_tower(text_cfg())


@pytest.fixture(scope="session")
def tiny_proj_tower():
    """Text width 48 projected to embed_dim 32: tokens must come out in the projected space."""
    from mmseg_text.text import build_text_tower

    return build_text_tower(text_cfg(model="tiny-clip-proj"))
