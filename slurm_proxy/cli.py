"""The command line: parse, call the core, turn its errors into one stderr line and an exit code.

``slurm-proxy ALIAS`` (what ssh runs) never gets here: ``__main__`` takes a lean path for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from . import __version__, config, log, paths, proxy, sshconfig
from .errors import SlurmProxyError
from .state import State


def _run(func: Callable[..., int], *args: object) -> None:
    code = proxy.run_reporting(func, *args)
    if code:
        raise SystemExit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slurm-proxy")
@click.option("-v", "--verbose", is_flag=True, help="Show every command run on the login node.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def cli(verbose: bool, quiet: bool) -> None:
    """ssh straight onto the compute node of your Slurm job.

    Put this in ~/.ssh/config (or run `slurm-proxy ssh-config --install`):

    \b
        Host slurm-*
            ProxyCommand /abs/path/slurm-proxy %h

    and `ssh slurm-PROFILE` lands on the node of a job with that profile's resources.
    """
    log.verbosity = 1 if verbose else -1 if quiet else 0


@cli.command()
@click.argument("alias")
def connect(alias: str) -> None:
    """Join stdin/stdout to ALIAS's compute node (what ProxyCommand runs; same as `slurm-proxy ALIAS`)."""
    _run(proxy.connect, alias)


@cli.command("ssh-config")
@click.option("--install", is_flag=True, help="Write the block into ~/.ssh/config (backup kept).")
@click.option("--file", "path", type=click.Path(path_type=Path), default=Path.home() / ".ssh" / "config",
              show_default=True, help="The ssh config file for --install.")
def ssh_config(install: bool, path: Path) -> None:
    """Print (or --install) the Host block that sends slurm-* aliases through slurm-proxy."""
    def run() -> int:
        try:
            prefix = config.load().prefix
        except SlurmProxyError:
            prefix = config.DEFAULT_PREFIX
        block = sshconfig.host_block(prefix, sshconfig.self_command(), State(paths.home()).known_hosts)
        if not install:
            click.echo(block, nl=False)
        elif sshconfig.install(block, path):
            log.info(f"installed the {prefix}* block in {path}")
        else:
            log.info(f"{path} already has this block")
        return 0

    _run(run)
