#!/usr/bin/env python
"""Choose a trained model's thresholds and post-processing rules again, on its run's validation split.

    python scripts/tune.py --checkpoint runs/demo/best --out runs/demo/best_tuned [--rules largest exclusive]

A thin shell over ``mmseg_text.cli.tune`` (installed as ``mmseg-tune``).
"""
import sys

from mmseg_text.cli.tune import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
