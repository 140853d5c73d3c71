"""Shared command-line plumbing: config + overrides parsing, one-line errors, exit codes."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Callable, Sequence

from mmseg_text.config import Config, load_config

# Errors a user can fix from the message alone: printed as one line, exit code 1, no traceback. Besides
# these, every exception class this package defines (EncoderWeightsError, TrainingDiverged, ...) says what to do.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)


def is_user_error(err: BaseException) -> bool:
    return isinstance(err, USER_ERRORS) or type(err).__module__.startswith("mmseg_text.")


def help_text(doc: str | None) -> str:
    """A module docstring's first paragraph as ``--help`` shows it: reST roles and literals as plain text."""
    first = (doc or "").strip().split("\n\n", 1)[0]
    first = re.sub(r":\w+:`~?([^`]+)`", r"\1", first)  # :func:`x` -> x
    return " ".join(re.sub(r"``([^`]+)``", r"\1", first).split())


def is_non_main_rank() -> bool:
    """True in a launched process other than rank 0 (torchrun / accelerate set RANK)."""
    return os.environ.get("RANK", "0") not in ("", "0")


def add_config_args(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    parser.add_argument("--config", default=default_config, help="YAML config file (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.lr=3e-4")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def run_main(body: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    # Our own messages at INFO; libraries (open_clip, timm, accelerate) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Rank-aware: with several processes only rank 0 logs at INFO; the others say only what goes wrong.
    logging.getLogger("mmseg_text").setLevel(logging.WARNING if is_non_main_rank() else logging.INFO)
    try:
        return int(body(argv) or 0)
    except Exception as err:
        if not is_user_error(err) or os.environ.get("MMSEG_TEXT_TRACEBACK"):  # developers: the full traceback
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 1
