"""The command line: parse, call the core, turn its errors into one stderr line and an exit code.

``slurm-proxy ALIAS`` (what ssh runs) never gets here: ``__main__`` takes a lean path for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__, config, first_config, host_block, log, manage, paths, proxy, slurm
from .defaults import AGENT_IDLE
from .doctor import run_checks
from .errors import SlurmProxyError, run_reporting
from .login import agent_status, open_login, serve_agent, start_agent, stop_agent
from .progress import ChangeReporter
from .state import State

if TYPE_CHECKING:
    from .login import AgentStatus


def main(args: list[str]) -> int:
    """The click commands, with every error as one ``slurm-proxy:`` line (a usage error after
    the usage) and click's exit codes."""
    try:
        code = cli.main(args=args, prog_name="slurm-proxy", standalone_mode=False)
    except click.exceptions.Abort:
        log.error("aborted")
        return 1
    except click.ClickException as e:
        if isinstance(e, click.UsageError) and e.ctx is not None:
            click.echo(e.ctx.get_usage(), err=True)
        log.error(e.format_message())
        return e.exit_code
    return code if isinstance(code, int) else 0


def _run(func: Callable[..., int], *args: object) -> None:
    code = run_reporting(func, *args)
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


def _aliases(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion: the configured profiles' aliases."""
    try:
        cfg = config.load()
    except SlurmProxyError:
        return []
    return [a for a in (cfg.prefix + n for n in cfg.profiles) if a.startswith(incomplete)]


@cli.command()
@click.argument("alias", shell_complete=_aliases)
def connect(alias: str) -> None:
    """Join stdin/stdout to ALIAS's compute node (what ProxyCommand runs; same as `slurm-proxy ALIAS`)."""
    _run(proxy.connect, alias)


def _profile_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion: the configured profile names."""
    try:
        return [n for n in config.load().profiles if n.startswith(incomplete)]
    except SlurmProxyError:
        return []


@cli.command()
@click.argument("profile", shell_complete=_profile_names)
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the job runs (else submit and return).")
def up(profile: str, wait: bool) -> None:
    """Allocate PROFILE's job ahead of time, so that connecting is instant."""
    def run() -> int:
        cfg = config.load()
        reporter = ChangeReporter(live=sys.stderr.isatty())
        try:
            job = manage.up(cfg, cfg.profile(profile), wait, reporter)
        finally:
            reporter.done()
        if job is not None and job.ready:
            click.echo(f"{cfg.prefix}{profile}: job {job.job_id} running on {job.node}")
        elif job is not None:
            click.echo(f"{cfg.prefix}{profile}: job {job.job_id} {job.state.lower()}")
        else:
            click.echo(f"{cfg.prefix}{profile}: submitted")
        return 0

    _run(run)


@cli.command()
@click.argument("profiles", nargs=-1, shell_complete=_profile_names)
@click.option("--all", "all_", is_flag=True, help="Every configured profile.")
def down(profiles: tuple[str, ...], all_: bool) -> None:
    """Cancel the jobs slurm-proxy submitted for PROFILES (never any other job)."""
    def run() -> int:
        if bool(profiles) == all_:
            raise click.UsageError("name one or more profiles, or --all")
        cfg = config.load()
        chosen = list(cfg.profiles.values()) if all_ else [cfg.profile(n) for n in profiles]
        cancelled = manage.down(cfg, chosen)
        click.echo(f"cancelled {', '.join(cancelled)}" if cancelled else "nothing to cancel")
        return 0

    _run(run)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Each profile's job: id, state, node, time left, idle timeout."""
    def run() -> int:
        cfg = config.load()
        rows = manage.status(cfg)
        if as_json:
            click.echo(json.dumps([r._asdict() for r in rows], indent=1))
            _say_drift(cfg)
            return 0
        table = [("ALIAS", "JOB", "STATE", "NODE", "TIME LEFT", "IDLE CANCEL")]
        for r in rows:
            state = (r.state or "-").lower()
            if r.reason and r.state != "RUNNING":
                state += f" ({r.reason})"
            table.append((r.alias, r.job_id or "-", state, r.node or "-",
                          slurm.format_duration(r.time_left) if r.job_id else "-",
                          f"after {slurm.format_duration(r.idle_timeout)} idle"
                          if r.idle_timeout else "never"))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        _say_drift(cfg)
        return 0

    _run(run)


def _say_drift(cfg: config.Config) -> None:
    """One stderr line when the installed block lists other profiles than the config has."""
    differs = host_block.drift(cfg.prefix, cfg.profiles, host_block.default_path())
    if differs:
        log.info(f"{differs}: run `{host_block.FIX}`")


@cli.command()
@click.option("--login", help="ssh destination of the login node (asked if not given).")
@click.option("--cluster", "cluster_name", help="A name for the cluster (default: from --login).")
@click.option("--non-interactive", is_flag=True, help="Never ask; fail instead.")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.option("--print", "print_only", is_flag=True, help="Print the proposal, write nothing.")
def init(login: str | None, cluster_name: str | None, non_interactive: bool, force: bool,
         print_only: bool) -> None:
    """Ask the login node's sinfo for partitions and GPUs, and write a config proposing profiles."""
    def run() -> int:
        nonlocal login
        if not login:
            if non_interactive:
                raise click.UsageError("--login is required with --non-interactive")
            login = click.prompt("Login node (an ssh destination, e.g. user@hpc.example.org)",
                                 err=True)
        if not config.valid_login(login):
            raise click.BadParameter(f"{login!r} is not an ssh destination", param_hint="--login")
        parts = first_config.partitions(open_login(login))
        if not parts:
            raise click.ClickException(f"sinfo on {login} lists no partitions")
        proposal = first_config.propose(cluster_name or first_config.cluster_name(login), login, parts)
        if print_only:
            click.echo(proposal.text, nl=False)
            return 0
        path = config.config_path()
        overwrite = force or (path.exists() and not non_interactive
                              and click.confirm(f"{path} exists. Overwrite it?", err=True))
        first_config.write(path, proposal, overwrite)
        log.info(f"wrote {path} with profiles: {', '.join(proposal.profiles)}")
        first = f"ssh {config.DEFAULT_PREFIX}{proposal.profiles[0]}"
        ssh_path = host_block.default_path()
        if host_block.split(host_block.read(ssh_path))[1] is None:
            log.info(f"next: slurm-proxy ssh-config --install, then {first}")
            return 0
        # A block is installed (the README installs it first): it lists the new profiles now.
        command = host_block.self_command()
        if host_block.ephemeral(command[0]):
            log.info(f"next: {host_block.FIX} from slurm-proxy installed for good, then {first}")
            return 0
        _, listing = host_block.install_listing(ssh_path, config.DEFAULT_PREFIX, proposal.profiles,
                                                command, State(paths.state_dir()).known_hosts)
        _own_hosts(listing, ssh_path)
        log.info(f"the slurm-proxy block in {ssh_path} lists them; next: {first}")
        return 0

    _run(run)


@cli.command()
@click.argument("profile", required=False, shell_complete=_profile_names)
@click.option("--allocate", is_flag=True,
              help="Also connect for real (allocates or reuses each profile's job).")
@click.option("--node", is_flag=True,
              help="Also look at the compute node through the profile (what VS Code's server needs).")
def doctor(profile: str | None, allocate: bool, node: bool) -> None:
    """Check the config, ssh, the login node, Slurm, connection sharing and VS Code settings."""
    failed = False
    for check in run_checks(profile, allocate, node):
        mark = "✓" if check.ok else "!" if check.ok is None else "✗"
        click.echo(f"{mark} {check.name}: {check.detail}")
        if check.fix and not check.ok:
            click.echo(f"    fix: {check.fix}")
        failed |= check.ok is False
    if failed:
        raise SystemExit(1)


@cli.command("ssh-config")
@click.option("--install", is_flag=True, help="Write the block into ~/.ssh/config (backup kept).")
@click.option("--file", "path", type=click.Path(path_type=Path), default=host_block.default_path(),
              show_default=True, help="The ssh config file for --install.")
def ssh_config(install: bool, path: Path) -> None:
    """Print (or --install) the Host block that sends slurm-* aliases through slurm-proxy, with a
    Host line per profile (which VS Code's Remote Explorer lists)."""
    def run() -> int:
        try:
            cfg: config.Config | None = config.load()
        except SlurmProxyError:
            if install and config.config_path().exists():  # the block would lose its profiles
                raise
            cfg = None
        command = host_block.self_command()
        ephemeral = host_block.ephemeral(command[0])
        if ephemeral and install:
            raise click.ClickException(f"{command[0]} is {ephemeral}, which goes away: install "
                                       "slurm-proxy for good first (pipx install / uv tool install)")
        if ephemeral:
            log.info(f"warning: {command[0]} is {ephemeral}; the block below will stop working")
        prefix = cfg.prefix if cfg else config.DEFAULT_PREFIX
        profiles = list(cfg.profiles) if cfg else []
        known_hosts = State(paths.state_dir()).known_hosts
        if not install:
            listing = host_block.listing(prefix, profiles, host_block.read(path))
            click.echo(host_block.host_block(prefix, command, known_hosts, aliases=listing.aliases),
                       nl=False)
            return 0
        changed, listing = host_block.install_listing(path, prefix, profiles, command, known_hosts)
        _own_hosts(listing, path)
        if changed:
            log.info(f"installed the {prefix}* block in {path}"
                     + (f", listing {', '.join(listing.aliases)}" if listing.aliases else ""))
        else:
            log.info(f"{path} already has this block")
        return 0

    _run(run)


def _own_hosts(listing: host_block.Listing, path: Path) -> None:
    for alias in listing.own:
        log.info(f"{alias} has a Host line of yours in {path}: not listed again in the block "
                 "(the pattern still sends it through slurm-proxy)")


@cli.command()
@click.option("--status", "show", is_flag=True, help="Show the running agent; start none.")
@click.option("--stop", is_flag=True, help="Stop the running agent (its open tunnels end).")
@click.option("--foreground", is_flag=True,
              help="Run the agent in this process, logging to stderr (connects start it in the background).")
@click.option("--idle", type=click.IntRange(1), metavar="SECONDS",
              help="Exit after this long with no login and no connect (default: the config's agent_idle).")
def agent(show: bool, stop: bool, foreground: bool, idle: int | None) -> None:
    """The login agent, which logs in once per login host for every connect (backend = "agent",
    the default on Windows). Without options: start it unless it runs, and show it."""
    def run() -> int:
        if show + stop + foreground > 1:
            raise click.UsageError("choose one of --status, --stop, --foreground")
        home = paths.state_dir()
        if foreground:
            return serve_agent(home, idle or _agent_idle())
        if stop:
            held = stop_agent(home)
            click.echo(f"stopped the agent (pid {held.pid})" if held else "no agent is running")
            return 0
        if not show:
            start_agent(home, idle or _agent_idle())
        held = agent_status(home)
        click.echo(_agent_lines(held) if held else "no agent is running")
        return 0

    _run(run)


def _agent_idle() -> int:
    try:
        return max(c.agent_idle for c in config.load().clusters.values())
    except SlurmProxyError:
        return AGENT_IDLE


def _agent_lines(held: AgentStatus) -> str:
    import time

    def ago(since: float) -> str:
        return slurm.format_duration(int(time.time() - since))

    lines = [f"agent: pid {held.pid}, up {ago(held.since)}, exits after "
             f"{slurm.format_duration(held.idle)} with no login and no connect"]
    for login in held.logins:
        use = (f"{login.channels} open channel{'' if login.channels == 1 else 's'}" if login.channels
               else f"unused for {slurm.format_duration(int(login.idle_for))}")
        lines.append(f"  {login.destination}: logged in {ago(login.since)} ago, {use}")
    return "\n".join(lines)
