"""Make the embedded synthetic dataset when a config points at one that does not exist yet.

Only a missing root whose folder name starts with ``synthetic`` is generated; a missing real
dataset is an error. The numbers match the Makefile's ``data`` target.
"""
from __future__ import annotations

from pathlib import Path

from accelerate import PartialState

from mmseg_text.config import Config

DEMO_IDS = 40  # people (two hands each); ~27 % of them land in test/
DEMO_SIZE = 512  # source image size in pixels
DEMO_SEED = 0


def ensure_demo_data(cfg: Config) -> Path:
    root = Path(cfg.data.root)
    if (root / "train" / "DCM").is_dir():
        return root
    if not root.name.startswith("synthetic"):
        raise FileNotFoundError(f"data.root {root} has no train/DCM folder (expected ROOT/train/DCM/IDxxx/*.png)")
    state = PartialState()
    with state.main_process_first():
        if not (root / "train" / "DCM").is_dir():
            from mmseg_text.data.synthetic import generate_dataset

            print(f"making the synthetic dataset in {root} ({DEMO_IDS} people, {DEMO_SIZE} px)")
            generate_dataset(root, ids=DEMO_IDS, size=DEMO_SIZE, seed=DEMO_SEED, workers=2)
    return root
