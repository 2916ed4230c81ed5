"""`slurm-proxy doctor`: check every link of the chain, each with the fix when it fails."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from . import config, host_block, node_doctor, paths
from .config import Cluster
from .errors import ConfigError, SlurmProxyError
from .login import Login, find_ssh, remote, ssh_client, ssh_options
from .manage import login_to
from .node_doctor import Check
from .node_trust import no_forwarding_file

SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
# A connect shorter than this is cut while a job waits in a queue of any use (ssh's ConnectTimeout
# also bounds the banner exchange through a ProxyCommand; VS Code passes its connectTimeout as it).
QUEUE_FLOOR = 60


def run_checks(profile_name: str | None, allocate: bool, node: bool = False) -> Iterator[Check]:
    try:
        cfg = config.load()
    except ConfigError as e:
        missing = not e.path.exists()
        yield Check("config", False, str(e), "create one: slurm-proxy init" if missing else
                    "edit the file at the place the message names" if e.line else "as the message says")
        return
    count = len(cfg.profiles)
    yield Check("config", True, f"{cfg.path}: {count} profile{'' if count == 1 else 's'}")
    try:
        profiles = [cfg.profile(profile_name)] if profile_name else list(cfg.profiles.values())
    except SlurmProxyError as e:
        yield Check("profile", False, str(e))
        return

    ssh: str | None = None
    try:
        ssh = find_ssh()
        version = subprocess.run([ssh, "-V"], capture_output=True, text=True).stderr.strip()
        yield Check("ssh client", True, f"{ssh}: {version}")
    except (SlurmProxyError, OSError) as e:
        ssh = None
        needed = any(p.cluster.backend == "openssh" for p in profiles)
        yield Check("ssh client", False if needed else None, str(e),
                    "install OpenSSH" if needed else "the login connection will use paramiko")
        if needed:
            return

    for cluster in sorted({p.cluster for p in profiles}):
        yield from _check_cluster(cluster)

    yield _check_block(cfg)
    if ssh is not None:
        for p in profiles:
            yield from _check_ssh_options(ssh, cfg.prefix, p)
    yield _check_vscode(any(p.pending_timeout > 15 for p in profiles),
                        profile_name if profile_name else "PROFILE")

    if allocate:
        for p in profiles:
            yield _check_allocation(cfg.prefix + p.name)
    if node:
        for p in profiles:
            yield from node_doctor.run(find_ssh(), cfg.prefix + p.name)


def _check_cluster(cluster: Cluster) -> Iterator[Check]:
    destination = cluster.login
    try:
        login = login_to(cluster)
        # A command missing exits as the shell's "not found" would: the login connection then
        # looks again through a login shell's PATH (login_shell), as for any Slurm command.
        res = login.run(["sh", "-c", 'm=0; for c in "$@"; do command -v "$c" >/dev/null || '
                         '{ echo "missing $c"; echo "$c: not found" >&2; m=127; }; done; exit $m',
                         "sh", *SLURM_COMMANDS])
    except SlurmProxyError as e:
        yield Check(f"login node {destination}", False, str(e),
                    f"make `ssh {destination}` work on its own first (keys, ~/.ssh/config)")
        return
    yield Check(f"login node {destination}", True, f"cluster {cluster.name} answers")
    missing = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("missing ")]
    profile = remote.Shell(cluster.login, cluster.login_shell).profile  # the login connection's own rule
    through = " (on a login shell's PATH: login_shell)" if profile else ""
    yield Check("Slurm commands", not missing,
                f"all found{through}" if not missing else f"not found on {destination}: {', '.join(missing)}",
                "" if not missing else "the login node needs the Slurm client commands on PATH, "
                                       "for a login shell at least")
    if res.chatter:
        yield Check("login shell output", None, f"your login shell on {destination} prints before every "
                    f"command: {remote.shown_chatter(res.chatter)!r}. slurm-proxy ignores it, but on a "
                    "node with the same home it breaks scp, sftp and rsync",
                    "print only in interactive shells: in ~/.bashrc after `[[ $- == *i* ]] || return` "
                    "(tcsh: `if ($?prompt)`, fish: `if status is-interactive`)")
    yield from _check_forwarding(login, cluster)
    shared, how = login.sharing()
    yield Check("connection sharing", shared, how, "" if shared is not False else
                "ssh could not keep a master connection; check its ControlPath directory")
    ssh = ssh_client(login)
    if ssh is not None:
        factor = second_factor(ssh, destination)
        if factor:
            yield Check("two-factor login", None, f"{destination} asks for {factor} after the key: "
                        "the openssh backend asks once per login (terminal, "
                        "or SSH_ASKPASS)",
                        "nothing to do; on Windows the default backend, the agent, asks once per login host")


def _check_forwarding(login: Login, cluster: Cluster) -> Iterator[Check]:
    """Does the login node forward TCP (``ssh -W``)? Tried toward the login node's own sshd, as
    ssh reaches it; a refusal sends sessions through srun, which needs no forwarding."""
    ssh = ssh_client(login)
    target = ssh_options(ssh, cluster.login) if ssh is not None else {}
    memo = no_forwarding_file(cluster.login)
    refused = ""
    if target.get("hostname"):
        refused = login.forwarding_refused(target["hostname"], int(target.get("port", "22")))
        if refused:
            remote.remember(memo, refused + "\n")
        elif memo.exists():
            memo.unlink()  # the site allows it again: sessions go the direct way once more
    elif memo.exists():
        refused = memo.read_text().strip()
    if refused:
        yield Check("TCP forwarding", None, f"{cluster.login} refuses it ({refused}): every session "
                    "goes into its job through srun (mode srun's path), which needs sshd installed on the "
                    "compute nodes", "nothing to do, or mode = \"srun\" for the cluster to say so; "
                    "`doctor PROFILE --node` checks the node")
    elif target.get("hostname"):
        yield Check("TCP forwarding", True, f"{cluster.login} forwards (ssh -W): mode adopt works")


def _check_block(cfg: config.Config) -> Check:
    """Does the installed Host block list the config's profiles (Remote Explorer shows those)?"""
    path = host_block.default_path()
    if host_block.split(host_block.read(path))[1] is None:
        return Check("Host block", None, f"no slurm-proxy block in {path}", host_block.FIX)
    differs = host_block.drift(cfg.prefix, cfg.profiles, path)
    return Check("Host block", None if differs else True,
                 differs or f"{path} lists every profile", host_block.FIX if differs else "")


def _check_ssh_options(ssh: str, prefix: str, profile: config.Profile) -> Iterator[Check]:
    """What ``ssh ALIAS`` will do: go through slurm-proxy, and wait long enough for a queue."""
    alias = prefix + profile.name
    options = ssh_options(ssh, alias)
    if not options:
        yield Check(f"ssh -G {alias}", None, "this ssh prints no options (OpenSSH before 6.8?)")
        return
    proxy = options.get("proxycommand", "none")
    ours = "slurm-proxy" in proxy or "slurm_proxy" in proxy
    yield Check(f"ssh -G {alias}", ours, f"ProxyCommand {proxy}", "" if ours else
                f"{host_block.FIX} (its block must come before any other Host that sets a "
                f"ProxyCommand for {alias})")
    timeout = options.get("connecttimeout", "none")
    wait = min(QUEUE_FLOOR, profile.pending_timeout)
    if timeout.isdigit() and int(timeout) < wait:
        yield Check(f"ConnectTimeout for {alias}", None,
                    f"ssh -G {alias} says ConnectTimeout {timeout} s, shorter than a queue wait "
                    f"({wait} s): a cold connect is cut with 'Connection timed out during banner "
                    "exchange' while the job is pending",
                    f"run `slurm-proxy up {profile.name}` before connecting (then the node answers "
                    f"at once), or set a longer ConnectTimeout for {prefix}* ahead of the one that "
                    f"sets {timeout}")


def vscode_settings_files() -> list[Path]:
    return [paths.user_dir("apps") / app / "User" / "settings.json"
            for app in ("Code", "Code - Insiders", "VSCodium")]


def _strip_jsonc(text: str) -> str:
    """settings.json allows comments and trailing commas."""
    text = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', lambda m: m.group(1) or "", text,
                  flags=re.S)
    return re.sub(r",(\s*[}\]])", r"\1", text)


def _check_vscode(may_queue: bool, profile: str = "PROFILE") -> Check:
    name = "VS Code connectTimeout"
    found = [f for f in vscode_settings_files() if f.is_file()]
    if not found:
        return Check(name, True, "no VS Code settings found (not needed for plain ssh)")
    try:
        settings = json.loads(_strip_jsonc(found[0].read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        return Check(name, None, f"cannot read {found[0]}: {e}")
    timeout = settings.get("remote.SSH.connectTimeout", 15) if isinstance(settings, dict) else 15
    if isinstance(timeout, (int, float)) and timeout < QUEUE_FLOOR and may_queue:
        return Check(name, None, f"remote.SSH.connectTimeout is {timeout} s in {found[0]}: a queued "
                     "job will make VS Code give up", '"remote.SSH.connectTimeout": 300, or run '
                     f"`slurm-proxy up {profile}` before connecting")
    return Check(name, True, f"{timeout} s")


def second_factor(ssh: str, destination: str) -> str:
    """What the login node asks after the key ("keyboard-interactive", "password"), or "": one
    login with prompts off (BatchMode) and no shared connection, read from ssh's -v lines."""
    proc = subprocess.run([ssh, "-v", "-o", "BatchMode=yes", "-o", "ControlPath=none", "-T", "--",
                           destination, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    if "with partial success" not in proc.stderr:  # OpenSSH: Authenticated using "publickey" with …
        return ""
    m = re.findall(r"Authentications that can continue: (\S+)", proc.stderr)
    return m[-1].replace(",", " or ") if m else "a second factor"


def _check_allocation(alias: str) -> Check:
    """A real connection: allocate (or reuse) the job and land on its node."""
    proc = subprocess.run([find_ssh(), "-o", "BatchMode=yes", alias, "echo slurm-proxy-ok"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    ok = proc.returncode == 0 and "slurm-proxy-ok" in proc.stdout
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return Check(f"ssh {alias}", ok, "admitted on the job's node" if ok else
                 (last[-1] if last else f"exit {proc.returncode}"),
                 "" if ok else "see the message; `slurm-proxy -v ALIAS` shows every step")
