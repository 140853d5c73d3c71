"""``mmseg-ablate``: train every text variant K times and write ablation.{md,json,png}.

    mmseg-ablate --config configs/demo.yaml --seeds 2 --out runs/ablation [--variants none,meta] [key=value ...]
    mmseg-ablate --positive-control ...   # prompted bone groups: none vs cross_attn / film / text_query, each vs its shuffled prompt
    mmseg-ablate --test ...               # also score every run on a labelled ROOT/test (bent / straight wrists apart)
    mmseg-ablate --metadata --test ...    # none / captions / numbers / shuffled captions (one level of mmseg-metadata-study;
                                          # data.root=data/synthetic_degrade1 for a degraded set)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from mmseg_text.cli.common import add_config_args, help_text, run_main


def _body(argv: Sequence[str] | None) -> int:
    from mmseg_text.studies.ablation import POSITIVE_CONTROL, VARIANTS, run_ablation
    from mmseg_text.studies.metadata_study import VARIANTS as METADATA_VARIANTS

    parser = argparse.ArgumentParser(prog="mmseg-ablate", description=help_text(__doc__))
    add_config_args(parser, default_config=None)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per variant (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder (runs, ablation.md/json/png)")
    parser.add_argument("--positive-control", action="store_true",
                        help="the positive control (data.prompted_groups): " + ", ".join(v.name for v in POSITIVE_CONTROL))
    parser.add_argument("--metadata", action="store_true",
                        help="is it the text or the metadata: " + ", ".join(v.name for v in METADATA_VARIANTS))
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS) + " (default: all)")
    parser.add_argument("--test", action="store_true",
                        help="also predict and score a labelled ROOT/test with each run's best/ export "
                             "(prediction path, first-pass wrist angle; bent and straight wrists apart)")
    args = parser.parse_args(argv)
    if args.test and args.positive_control:
        raise ValueError("--test scores the full bone set; the positive control's targets are prompted subsets")
    if args.metadata and args.positive_control:
        raise ValueError("--metadata and --positive-control are two different studies: choose one")
    table = POSITIVE_CONTROL if args.positive_control else METADATA_VARIANTS if args.metadata else VARIANTS
    wanted = [n.strip() for n in args.variants.split(",") if n.strip()] if args.variants else [v.name for v in table]
    unknown = sorted(set(wanted) - {v.name for v in table})
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {[v.name for v in table]}")
    variants = [v for v in table if v.name in wanted]
    result = run_ablation(args.config, args.out, args.seeds, args.overrides, variants, test=args.test)
    print((Path(args.out) / "ablation.md").read_text())
    return 0 if result else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
