#!/usr/bin/env python
"""Text on/off ablation.

    python scripts/ablate.py --config FILE --seeds K --out DIR [key=value ...]

A thin shell over ``mmseg_text.cli.ablate`` (installed as ``mmseg-ablate``).
"""
import sys

from mmseg_text.cli.ablate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
