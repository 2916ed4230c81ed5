"""Diagnostics: one prefixed line each, always to stderr (stdout is the SSH stream)."""

from __future__ import annotations

import sys

verbosity = 0  # -1 quiet, 0 normal, 1 debug (-v)


def info(message: str) -> None:
    if verbosity >= 0:
        _write(message)


def debug(message: str) -> None:
    if verbosity >= 1:
        _write(message)


def error(message: str) -> None:
    _write(message)


def _write(message: str) -> None:
    try:
        sys.stderr.write(f"slurm-proxy: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: nowhere left to report to
        pass
