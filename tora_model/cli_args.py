"""The command line's argument types, parser class and device check: everything refused before any file is read.

Source: issue 13 (every bad input gets one message naming the option, what was expected and what arrived; no
traceback). Number types turn `nan`, `inf`, zero frame rates and step counts into argparse errors; `Parser` turns
off prefix matching (`--frames 50` must not become `--frames-dir 50`), shows defaults in --help and prints errors
as two lines without the long usage text.
"""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

import torch

from .errors import ConfigError


def _number(text: str, kind: type, low: float, high: float, expected: str):
    """`text` as int or float within [low, high] (finite), or argparse's error naming what was expected."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not (math.isfinite(value) and low <= value <= high):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, math.inf, "a whole number of at least 1")


SEED_RANGE = 2**64  # torch.Generator.manual_seed takes 0 .. 2**64 - 1 (ComfyUI's seed widgets too)


def seed_number(text: str) -> int:
    return _number(text, int, 0, SEED_RANGE - 1, f"a whole number from 0 to {SEED_RANGE - 1}")


def finite_float(text: str) -> float:
    return _number(text, float, -math.inf, math.inf, "a finite number (not nan or inf)")


def non_negative_float(text: str) -> float:
    return _number(text, float, 0.0, math.inf, "a finite number >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, math.ulp(0.0), math.inf, "a finite number > 0")


def fraction(text: str) -> float:
    return _number(text, float, 0.0, 1.0, "a fraction of the denoising steps from 0 to 1")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:  # no default, or a flag (store_true/store_false)
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """No prefix matching (`--frames 50` must not become `--frames-dir 50`), defaults in --help, two-line errors.

    Subcommand parsers are made from this class too (argparse uses the parent's class).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(
            2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists every option and its default)\n"
        )


def check_device(name: str | None) -> None:
    """Refuse, before any work, a --device this machine's torch cannot use."""
    if name is None:
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: expected cpu, cuda or cuda:N (N = GPU index)") from None
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise ConfigError(f"--device {name}: expected cpu, cuda or cuda:N; {device.type} is not supported")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name}: torch {torch.__version__} sees no CUDA GPU on this machine; use --device cpu (slow "
            "for the released weights), or a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
        )
