#!/usr/bin/env python
"""Check a dataset folder before training.

    python scripts/check_data.py ROOT [--json]

A thin shell over ``mmseg_text.cli.check_data`` (installed as ``mmseg-check-data``).
"""
import sys

from mmseg_text.cli.check_data import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
