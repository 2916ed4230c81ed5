"""Entry point. ``slurm-proxy ALIAS`` is what ssh runs on every connection: it takes a lean path
that never imports click."""

from __future__ import annotations

import sys

HOT_COMMANDS = ("connect",)
DEPENDENCIES_THAT_WARN = ("paramiko", "cryptography")
# Every other click command: a bare word that is one of these is never taken for an alias.
CLI_COMMANDS = ("up", "down", "status", "init", "doctor", "ssh-config", "agent")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    hot = _hot_path(args)
    answer = None
    if hot is not None and hot[1] <= 0:  # -v shows the full path's every step
        from . import warm

        answer = warm.connect(hot[0])  # a warm connect whose decision stands is gone here
    quiet_dependencies()
    if hot is not None:
        from . import log, proxy
        from .errors import run_reporting

        alias, verbosity = hot
        log.verbosity = verbosity
        return run_reporting(proxy.connect, alias, None, answer)
    from .cli import main

    return main(args)


def quiet_dependencies() -> None:
    """What paramiko and cryptography warn of (deprecations that one's upgrade brings against
    the other's: DSA, TripleDES) is for their developers, not the user's terminal, where it
    would stand in every login's output. Costs no import."""
    import warnings

    for module in DEPENDENCIES_THAT_WARN:
        warnings.filterwarnings("ignore", module=module + r"(\.|$)")


def _hot_path(args: list[str]) -> tuple[str, int] | None:
    """``[-v|-q] [connect] ALIAS`` → (alias, verbosity); else None."""
    verbosity = 0
    while args and args[0] in ("-v", "--verbose", "-q", "--quiet"):
        verbosity = 1 if args[0] in ("-v", "--verbose") else -1
        args = args[1:]
    if args and args[0] in HOT_COMMANDS:
        args = args[1:]
    elif args and args[0] in CLI_COMMANDS:
        return None
    if len(args) != 1 or args[0].startswith("-"):
        return None
    return args[0], verbosity


if __name__ == "__main__":
    sys.exit(main())
