#!/usr/bin/env python
"""Train a (text-conditioned) segmenter.

    accelerate launch scripts/train.py [--config FILE] [--resume latest|DIR] [key=value ...]
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 scripts/train.py ...   (CPU DDP over gloo)

With no arguments it runs configs/demo.yaml and makes the synthetic dataset first when absent.

A thin shell over ``mmseg_text.cli.train`` (installed as ``mmseg-train``).
"""
import sys

from mmseg_text.cli.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
