"""``mmseg-metadata-study``: is it the text or the metadata? No conditioning, captions, numbers and shuffled captions,
paired seeds, on the plain synthetic set and on copies with fading images (a dose-response); resumable.

    mmseg-metadata-study --config configs/metadata_study.yaml --out runs/metadata_study \
        --root data/synthetic --ids 40 --size 512 --seeds 5 --levels 0.5 1 --level-seeds 3 [--text-lr-point] [key=value ...]
    mmseg-metadata-study ... --fade hand --levels 0.5 0.75 1   # the whole hand fades: at 1 only the metadata tells

Writes OUT/metadata_study.{md,json,png} (``--fade hand``: metadata_study_hand.*) and, per level,
OUT/degradeL[_hand]/ablation.* (``mmseg-ablate`` tables); the plain level OUT/degrade0 is shared.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from mmseg_text.cli.common import add_config_args, help_text, run_main


def _body(argv: Sequence[str] | None) -> int:
    from mmseg_text.data.synthetic import FADES
    from mmseg_text.studies.metadata_study import LEVELS, TEXT_LR_POINT, VARIANTS, run_metadata_study, study_stem

    parser = argparse.ArgumentParser(prog="mmseg-metadata-study", description=help_text(__doc__))
    add_config_args(parser, default_config="configs/metadata_study.yaml")
    parser.add_argument("--out", required=True, help="output folder (runs and the study's tables and plot)")
    parser.add_argument("--root", default="data/synthetic", help="the plain synthetic set (made when missing)")
    parser.add_argument("--ids", type=int, default=40, help="people in the synthetic sets (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="image side of the synthetic sets (default: %(default)s)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic sets (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds on the plain set (default: %(default)s)")
    parser.add_argument("--levels", type=float, nargs="*", default=list(LEVELS),
                        help="degradation levels in (0, 1] of the dose-response (default: %(default)s)")
    parser.add_argument("--fade", choices=FADES, default="bones",
                        help="what the degradation hides: the bones (silhouette stays) or the whole hand "
                             "(default: %(default)s)")
    parser.add_argument("--level-seeds", type=int, default=3, help="paired seeds per level (default: %(default)s)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS) + " (default: all)")
    parser.add_argument("--text-lr-point", action="store_true",
                        help=f"also run '{TEXT_LR_POINT.name}' on the plain set ({' '.join(TEXT_LR_POINT.overrides)})")
    args = parser.parse_args(argv)
    bad = [lv for lv in args.levels if not 0.0 < lv <= 1.0]
    if bad:
        raise ValueError(f"--levels must be in (0, 1], got {bad}")
    wanted = [n.strip() for n in args.variants.split(",")] if args.variants else [v.name for v in VARIANTS]
    unknown = sorted(set(wanted) - {v.name for v in VARIANTS})
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {[v.name for v in VARIANTS]}")
    run_metadata_study(args.config, args.out, root=args.root, ids=args.ids, size=args.size, data_seed=args.data_seed,
                       seeds=args.seeds, level_seeds=args.level_seeds, levels=args.levels, overrides=args.overrides,
                       variants=[v for v in VARIANTS if v.name in wanted],
                       plain_extra=[TEXT_LR_POINT] if args.text_lr_point else [], fade=args.fade)
    print((Path(args.out) / f"{study_stem(args.fade)}.md").read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
