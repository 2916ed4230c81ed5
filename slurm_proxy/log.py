"""Diagnostics: one prefixed line each, always to stderr (stdout is the SSH stream)."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence

verbosity = 0  # -1 quiet, 0 normal, 1 debug (-v)
stamped = False  # each line starts with the time (the agent's log file)
said = 0  # lines a connect at the normal verbosity shows (info, error, progress), shown or not


def info(message: str) -> None:
    global said
    said += 1
    if verbosity >= 0:
        _write(message)


def debug(message: str) -> None:
    if verbosity >= 1:
        _write(message)


def shown(argv: Sequence[str]) -> str:
    """A command line on one line: a word that holds a script shows as its length."""
    return shlex.join(w if "\n" not in w else f"<script of {w.count(chr(10))} lines>" for w in argv)


def last_line(text: str) -> str:
    """The line worth showing of a command's stderr: its last non-blank one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def one_line(error: BaseException) -> str:
    """An exception as one short line: its message's first line, else its type."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return (" ".join(lines[0].split()) if lines else type(error).__name__)[:300]


def rewrite(message: str | None) -> None:
    """A line rewritten in place on a terminal (progress); ``None`` ends it."""
    global said
    said += 1
    if verbosity < 0:
        return
    try:
        sys.stderr.write("\n" if message is None else f"\r\033[Kslurm-proxy: {message}")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def error(message: str) -> None:
    global said
    said += 1
    _write(message)


def _write(message: str) -> None:
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S ") if stamped else ""
        sys.stderr.write(f"{stamp}slurm-proxy: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: nowhere left to report to
        pass
