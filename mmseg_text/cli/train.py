"""``mmseg-train`` / ``accelerate launch scripts/train.py``: config + overrides -> ``engine.train.train``.

With no ``--config`` it runs ``configs/demo.yaml`` (when the checkout has it) and makes the synthetic
dataset first when absent.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from mmseg_text.cli.common import add_config_args, config_from_args, run_main

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
logger = logging.getLogger(__name__)


def _body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="mmseg-train", description=__doc__.splitlines()[0])
    add_config_args(parser, default_config=str(DEMO_CONFIG) if DEMO_CONFIG.is_file() else None)
    parser.add_argument("--resume", default=None, help="'latest' (this output_dir's newest checkpoint) or a checkpoint folder")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    import torch

    from mmseg_text.engine.cpu_memory import keep_freed_memory
    from mmseg_text.engine.demo_data import ensure_demo_data
    from mmseg_text.engine.train import train

    # A process-wide allocator setting belongs to the process entry point, not to the library call.
    if not torch.cuda.is_available() and keep_freed_memory():
        logger.info("CPU training: freed memory is kept in the process (glibc mallopt)")
    ensure_demo_data(cfg)
    summary = train(cfg, resume=args.resume)
    print(f"done: {summary['steps']} steps, best val mean Dice {summary['best_val_mean_dice']:.4f}, "
          f"summary in {Path(cfg.output_dir) / 'summary.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":  # python -m mmseg_text.cli.train / accelerate launch -m mmseg_text.cli.train
    raise SystemExit(main())
