"""``mmseg-train`` / ``accelerate launch scripts/train.py``: config + overrides -> ``training.loop.train``.

With no ``--config`` it runs the packaged ``demo`` config (``configs/demo.yaml``) and makes the synthetic
dataset first when absent. ``--folds all`` trains every fold (training/kfold.py).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from mmseg_text.cli.common import add_config_args, config_from_args, help_text, run_main

logger = logging.getLogger(__name__)


def _body(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="mmseg-train", description=help_text(__doc__))
    add_config_args(parser, default_config="demo")
    parser.add_argument("--resume", default=None, help="'latest' (this output_dir's newest checkpoint) or a checkpoint folder")
    parser.add_argument("--folds", default=None,
                        help="'all' or a list like 0,2: train these folds into output_dir/fold<k>/ (resuming fold by "
                             "fold) and tune thresholds on their out-of-fold predictions (output_dir/thresholds.json)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    import torch

    from mmseg_text.cpu_memory import keep_freed_memory
    from mmseg_text.training.demo_data import ensure_demo_data
    from mmseg_text.training.loop import train

    # A process-wide allocator setting belongs to the process entry point, not to the library call.
    if not torch.cuda.is_available() and keep_freed_memory():
        logger.info("CPU training: freed memory is kept in the process (glibc mallopt)")
    ensure_demo_data(cfg)
    if args.folds:
        from mmseg_text.training.kfold import train_folds

        if args.resume:
            raise ValueError("--folds resumes every fold by itself; leave out --resume")
        folds = None if args.folds == "all" else [int(k) for k in args.folds.split(",")]
        result = train_folds(cfg, folds)
        print(f"done: {result['folds_done']} of {cfg.data.num_folds} folds in {cfg.output_dir}; "
              f"out-of-fold mean Dice {result.get('out_of_fold_mean_dice')}")
        return 0
    summary = train(cfg, resume=args.resume)
    print(f"done: {summary['steps']} steps, best val mean Dice {summary['best_val_mean_dice']:.4f}, "
          f"summary in {Path(cfg.output_dir) / 'summary.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":  # python -m mmseg_text.cli.train / accelerate launch -m mmseg_text.cli.train
    raise SystemExit(main())
