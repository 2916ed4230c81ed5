"""The installed Host block through the real ssh client: a Host per profile that follows the
config (issue #26), a crafted host name that reaches no shell (issue #24), and doctor reading
the options ssh will use for an alias."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import cluster
from .cluster import PROXY, as_user, err, jobs, text

BEGIN = "# >>> slurm-proxy >>>"
BEFORE = "# my own settings\nHost hpc-old\n    User someone\n\n"
AFTER = "Host *\n    ServerAliveCountMax 3\n"


def proxy_command(ssh_config: Path, alias: str) -> str:
    """The ProxyCommand ssh reads for ``alias`` (``ssh -G``, as VS Code's ssh would)."""
    shown = as_user(["ssh", "-G", "-F", str(ssh_config), alias], check=True)
    return next(ln.split(" ", 1)[1] for ln in text(shown).splitlines() if ln.startswith("proxycommand "))


def install(ssh_config: Path, env: dict[str, str]) -> str:
    proc = as_user([PROXY, "ssh-config", "--install", "--file", str(ssh_config)], env=env)
    assert proc.returncode == 0, err(proc)
    return err(proc)


def test_each_profile_is_a_host_and_the_block_follows_the_config(user_tmp: Path, clean: None) -> None:
    cfg = user_tmp / "config.toml"
    body = '[defaults]\npartition = "debug"\ntime = "10:00"\n[clusters.test]\nlogin = "testlogin"\n'
    cluster.write_config(cfg, body + "[profiles.debug]\ncpus = 1\n[profiles.Big]\ncpus = 2\n")
    env = {"SLURM_PROXY_CONFIG": str(cfg)}
    ssh_config = user_tmp / "ssh_config"
    cluster.write_config(ssh_config, BEFORE + AFTER)
    assert "listing slurm-debug, slurm-Big" in install(ssh_config, env)
    assert proxy_command(ssh_config, "slurm-debug") == f"{PROXY} slurm-debug"
    assert proxy_command(ssh_config, "slurm-Big") == f"{PROXY} slurm-Big"  # its case kept
    assert proxy_command(ssh_config, "slurm-other") == f"{PROXY} '%h'"  # the pattern, for the rest
    # A literal host connects like the pattern did (ssh reads only this file: -F).
    proc = as_user(["ssh", "-o", "BatchMode=yes", "-F", str(ssh_config), "slurm-debug", "echo landed"],
                   env=env)
    assert proc.returncode == 0 and text(proc) == "landed\n", err(proc)
    assert [j[1] for j in jobs()] == ["slurm-proxy-debug"]

    first = ssh_config.read_bytes()
    cluster.write_config(cfg, body + "[profiles.Big]\ncpus = 2\n[profiles.gpu1]\ngres = \"gpu:1\"\n")
    assert "listing slurm-Big, slurm-gpu1" in install(ssh_config, env)
    assert proxy_command(ssh_config, "slurm-gpu1") == f"{PROXY} slurm-gpu1"
    assert proxy_command(ssh_config, "slurm-debug") == f"{PROXY} '%h'"  # no Host of its own now
    content = ssh_config.read_text()
    assert content.count(BEGIN) == 1 and "Host slurm-debug\n" not in content
    assert content.startswith(BEGIN) and content.endswith(BEFORE + AFTER)  # byte for byte
    assert (user_tmp / "ssh_config.slurm-proxy.bak").read_bytes() == first
    assert "already has this block" in install(ssh_config, env)


@pytest.mark.parametrize("crafted", ["slurm-x$(touch {pwned})", "slurm-x`touch {pwned}`"])
def test_a_crafted_host_name_reaches_no_shell(user_tmp: Path, crafted: str) -> None:
    """What an OpenSSH before 9.6 does with a name from its command line (a git submodule URL),
    done by this one: it refuses such a name on its command line (Debian backported the check),
    but puts a HostName into %h the same way, through ``$SHELL -c "exec …"``. The name reaches
    slurm-proxy as one word, which refuses it as an alias; nothing else runs."""
    pwned = Path("/tmp/pwned-slurm-proxy-host")
    pwned.unlink(missing_ok=True)
    ssh_config = user_tmp / "ssh_config"
    install(ssh_config, {})
    assert proxy_command(ssh_config, "slurm-probe") == f"{PROXY} '%h'"
    name = crafted.format(pwned=pwned)
    proc = as_user(["ssh", "-o", "BatchMode=yes", "-F", str(ssh_config), "-o", f'HostName="{name}"',
                    "slurm-probe", "true"])
    assert proc.returncode == 255
    assert f"invalid host alias '{name}'" in err(proc), err(proc)
    assert not pwned.exists()


@pytest.fixture
def user_ssh_config() -> Iterator[Path]:
    """sptest's own ~/.ssh/config, given back as it was."""
    path = cluster.HOME / ".ssh" / "config"
    before = path.read_bytes()
    yield path
    path.write_bytes(before)


def test_doctor_warns_of_a_short_connect_timeout_in_the_users_config(user_ssh_config: Path) -> None:
    proc = as_user([PROXY, "doctor", "debug"])
    assert "ConnectTimeout" not in text(proc), text(proc)
    assert f"✓ ssh -G slurm-debug: ProxyCommand {PROXY} slurm-debug" in text(proc), text(proc)

    user_ssh_config.write_bytes(user_ssh_config.read_bytes() + b"Host *\n    ConnectTimeout 5\n")
    proc = as_user([PROXY, "doctor", "debug"])
    assert proc.returncode == 0, text(proc)
    assert ("! ConnectTimeout for slurm-debug: ssh -G slurm-debug says ConnectTimeout 5 s, shorter "
            "than a queue wait (60 s)") in text(proc), text(proc)
    assert "fix: run `slurm-proxy up debug` before connecting" in text(proc)


def test_status_says_when_the_installed_block_lags_the_config(user_tmp: Path) -> None:
    cfg = user_tmp / "more.toml"
    usual = (cluster.HOME / ".config" / "slurm-proxy" / "config.toml").read_text()  # install-proxy's
    cluster.write_config(cfg, usual + "[profiles.extra]\ncpus = 1\n")
    proc = as_user([PROXY, "status"], env={"SLURM_PROXY_CONFIG": str(cfg)})
    assert proc.returncode == 0, err(proc)
    assert err(proc).endswith("lacks slurm-extra: run `slurm-proxy ssh-config --install`\n"), err(proc)
    assert "slurm-extra" not in err(as_user([PROXY, "status"]))



def test_a_controlpath_of_the_users_own_is_used_as_it_is(user_tmp: Path, cfg: dict[str, str], clean: None,
                                                          ssh_config_kept: None) -> None:
    """The user's ssh config sets a ControlPath for the login host: connects share that master,
    slurm-proxy makes none of its own, and leaves no warm memo (it cannot check that master)."""
    path = cluster.HOME / ".ssh" / "config"
    socket = user_tmp / "own-master"
    own = f"Host testlogin\n    ControlMaster auto\n    ControlPath {socket}\n    ControlPersist 60\n\n"
    path.write_text(own + path.read_text())
    for sock in cluster.control_sockets():  # slurm-proxy's own masters: none from here on
        as_user(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "unused"])
    try:
        for _ in range(3):
            proc = as_user(["ssh", "-o", "BatchMode=yes", "slurm-debug", "cat /proc/self/cgroup"], env=cfg)
            assert proc.returncode == 0 and "/job_" in text(proc), err(proc)
        check = as_user(["ssh", "-O", "check", "-o", f"ControlPath={socket}", "testlogin"])
        assert check.returncode == 0, err(check)
        assert cluster.control_sockets() == []
        assert not as_user(["ls", str(cluster.STATE / "warm")]).stdout.strip()
    finally:
        as_user(["ssh", "-O", "exit", "-o", f"ControlPath={socket}", "testlogin"])
