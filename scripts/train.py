#!/usr/bin/env python
"""Train a (text-conditioned) hand-bone segmenter.

    accelerate launch scripts/train.py [--config FILE] [--resume latest|DIR] [key=value ...]
    torchrun --nproc_per_node 2 scripts/train.py ...      (CPU DDP over gloo: ACCELERATE_USE_CPU=1)

With no arguments it runs configs/demo.yaml and makes the synthetic dataset first when absent.
"""
import sys

from mmseg_text.engine.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
