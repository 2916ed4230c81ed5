"""__main__.py: which command lines take the lean path ssh uses on every connection."""

from __future__ import annotations

import pytest

from slurm_proxy import __main__ as entry


@pytest.mark.parametrize(
    ("args", "hot"),
    [
        (["slurm-debug"], ("slurm-debug", 0)),
        (["-v", "slurm-debug"], ("slurm-debug", 1)),
        (["--verbose", "slurm-debug"], ("slurm-debug", 1)),
        (["-q", "slurm-debug"], ("slurm-debug", -1)),
        (["--quiet", "slurm-debug"], ("slurm-debug", -1)),
        (["-v", "-q", "slurm-debug"], ("slurm-debug", -1)),  # the last one wins
        (["connect", "slurm-x"], ("slurm-x", 0)),
        (["-v", "connect", "slurm-x"], ("slurm-x", 1)),
        # After an explicit `connect`, any single word is the alias (the proxy vets it).
        (["connect", "ssh-config"], ("ssh-config", 0)),
        # Not an alias, but not a command either: the proxy refuses it with one clear line.
        (["slurm-a;b"], ("slurm-a;b", 0)),
    ],
)
def test_hot_path(args: list[str], hot: tuple[str, int]) -> None:
    assert entry._hot_path(args) == hot


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["-h"],
        ["--version"],
        ["-v"],
        ["connect"],
        ["-v", "connect"],
        ["connect", "--help"],
        ["connect", "-oProxyCommand=x"],
        ["-oProxyCommand=x"],
        ["slurm-a", "slurm-b"],
        ["connect", "slurm-a", "extra"],
        ["known-hosts", "slurm-x"],  # no such command any more: not two words for the proxy
        ["ssh-config", "--install"],
        *[[word] for word in entry.CLI_COMMANDS],
        *[["-v", word] for word in entry.CLI_COMMANDS],
        *[["-q", word, "--help"] for word in entry.CLI_COMMANDS],
    ],
)
def test_not_hot_path(args: list[str]) -> None:
    assert entry._hot_path(args) is None


def test_hot_path_does_not_modify_its_argument() -> None:
    args = ["-v", "connect", "slurm-x"]
    entry._hot_path(args)
    assert args == ["-v", "connect", "slurm-x"]


def test_every_click_command_is_known_to_the_hot_path() -> None:
    from slurm_proxy.cli import cli

    commands = set(cli.commands)
    assert commands, "the click group lost its commands"
    assert commands <= set(entry.HOT_COMMANDS) | set(entry.CLI_COMMANDS), (
        "a new click command must be listed in __main__.CLI_COMMANDS, or `slurm-proxy NEWCOMMAND` "
        "is taken for a host alias"
    )


def test_hot_commands_are_click_commands_too() -> None:
    from slurm_proxy.cli import cli

    assert set(entry.HOT_COMMANDS) <= set(cli.commands)
    assert not set(entry.HOT_COMMANDS) & set(entry.CLI_COMMANDS)


def test_debug_lines_show_a_script_as_its_length() -> None:
    from slurm_proxy import log

    assert log.shown(["bash", "-c", "a\nb\nc\n", "x y"]) == "bash -c '<script of 3 lines>' 'x y'"


def test_the_dependencies_deprecations_never_reach_the_users_terminal() -> None:
    """A process of slurm-proxy's drops what paramiko and cryptography warn of (as cryptography 46
    does of DSA on every paramiko 3.4 login); its own warnings and others' still show."""
    import subprocess
    import sys

    code = """import warnings, sys
from slurm_proxy import __main__ as entry
entry.quiet_dependencies()
for module in ("paramiko.dsskey", "cryptography.utils", "paramikox", "elsewhere"):
    warnings.warn_explicit("deprecated: " + module, DeprecationWarning, "f.py", 1, module=module)
"""
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                         check=True)
    assert "paramiko.dsskey" not in out.stderr and "cryptography.utils" not in out.stderr
    assert "deprecated: paramikox" in out.stderr and "deprecated: elsewhere" in out.stderr
