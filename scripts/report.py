#!/usr/bin/env python
"""Write RUN_DIR/report.md.

    python scripts/report.py RUN_DIR --evaluation FILE [--overlays DIR]

A thin shell over ``mmseg_text.cli.report`` (installed as ``mmseg-report``).
"""
import sys

from mmseg_text.cli.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
