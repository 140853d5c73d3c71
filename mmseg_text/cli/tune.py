"""``mmseg-tune``: choose a trained model's thresholds and post-processing rules again, on its run's validation split.

    mmseg-tune --checkpoint runs/demo/best --out runs/demo/best_tuned [--rules largest attached exclusive ...]
        [--data-root ROOT]

The weights are copied unchanged; the new folder's ``thresholds.json`` holds the choice among ``--rules`` (default:
every rule ``train.tune_postprocess`` tries), so a rule added after training is tried without training again, paired
with the old choice on the same weights. One JSON line reports the classes whose threshold or rule changed.
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from mmseg_text.cli.common import help_text, run_main


def build_parser() -> argparse.ArgumentParser:
    from mmseg_text.thresholds import TUNED_RULES

    parser = argparse.ArgumentParser(prog="mmseg-tune", description=help_text(__doc__))
    parser.add_argument("--checkpoint", required=True, help="exported model folder, e.g. runs/demo/best")
    parser.add_argument("--out", required=True, help="folder for the model with the new thresholds.json")
    parser.add_argument("--rules", nargs="*", default=list(TUNED_RULES),
                        help="post-processing rules tried besides none (default: %(default)s; none at all: "
                             "thresholds only)")
    parser.add_argument("--data-root", default=None, help="dataset root (default: the one the model was trained on)")
    parser.add_argument("--no-progress", action="store_true", help="hide the data-preparation progress bars")
    return parser


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mmseg_text.training.retune import retune

    report = retune(args.checkpoint, args.out, rules=args.rules, data_root=args.data_root,
                    progress=not args.no_progress)
    print(json.dumps(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
