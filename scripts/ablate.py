#!/usr/bin/env python
"""Text on/off ablation: python scripts/ablate.py --config FILE --seeds K --out DIR [key=value ...]"""
import sys

from mmseg_text.engine.ablation_cli import main

if __name__ == "__main__":
    sys.exit(main())
