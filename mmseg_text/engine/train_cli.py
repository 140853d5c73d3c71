"""``scripts/train.py``: parse argv, make the demo data if needed, call ``train(cfg)``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from mmseg_text.catalogue import REPO_ROOT
from mmseg_text.engine.cli import add_config_args, config_from_args, run_main

DEMO_CONFIG = str(REPO_ROOT / "configs" / "demo.yaml")


def _body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser, default_config=DEMO_CONFIG)
    parser.add_argument("--resume", default=None, help="'latest' (this output_dir's newest checkpoint) or a checkpoint folder")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from mmseg_text.engine.demo_data import ensure_demo_data
    from mmseg_text.engine.train import train

    ensure_demo_data(cfg)
    summary = train(cfg, resume=args.resume)
    best = summary.get("best_val_mean_dice")
    print(f"done: {summary['steps']} steps, best val mean Dice {best:.4f}, summary in {Path(cfg.output_dir) / 'summary.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)
