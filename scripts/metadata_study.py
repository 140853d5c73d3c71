#!/usr/bin/env python
"""Is it the text or the metadata? (captions vs numbers vs shuffled captions, plain and degraded images).

    python scripts/metadata_study.py --out DIR [--seeds 5 --levels 0.5 1 --level-seeds 3] [key=value ...]

A thin shell over ``mmseg_text.cli.metadata_study`` (installed as ``mmseg-metadata-study``).
"""
import sys

from mmseg_text.cli.metadata_study import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
