#!/usr/bin/env python
"""Derive hand side and wrist angle from the annotation polygons.

    python scripts/derive_meta.py ROOT --split train

A thin shell over ``mmseg_text.cli.derive_meta`` (installed as ``mmseg-derive-meta``).
"""
import sys

from mmseg_text.cli.derive_meta import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
