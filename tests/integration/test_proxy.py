"""`ssh slurm-<profile>` through the real ssh client, the real login sshd, Slurm and the node's
pam_slurm_adopt, as the unprivileged user."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import cluster
from .cluster import PROXY, SSH, as_user, err, jobs, text

pytestmark = pytest.mark.usefixtures("clean")


@pytest.mark.smoke
def test_lands_on_a_compute_node_inside_the_job() -> None:
    proc = as_user([*SSH, "slurm-debug", 'echo $((6*7)); echo "$SSH_CONNECTION"; cat /proc/self/cgroup'])
    assert proc.returncode == 0, err(proc)
    lines = text(proc).splitlines()
    assert lines[0] == "42"
    (job_id, _name, state, node), = jobs("slurm-proxy-debug")
    assert state == "RUNNING"
    # the node's own sshd answered (127.0.1.N), and pam_slurm_adopt adopted us into the job
    assert lines[1].split()[2] == {"node1": "127.0.1.1", "node2": "127.0.1.2"}[node]
    assert any(f"job_{job_id}/step_extern" in ln for ln in lines[2:]), lines
    assert "submitted job" in err(proc) and f"running on {node}" in err(proc)


def test_second_connect_reuses_the_job() -> None:
    first = as_user([*SSH, "slurm-debug", "true"])
    assert first.returncode == 0, err(first)
    (job_id, *_), = jobs()
    second = as_user([*SSH, "slurm-debug", "true"])
    assert second.returncode == 0, err(second)
    assert [j[0] for j in jobs()] == [job_id]
    assert "submitted" not in err(second)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_stdout_carries_only_tunnel_bytes(warm: bool) -> None:
    """Run the ProxyCommand by hand, chatty (-v): the first byte on stdout is the node's banner."""
    if warm:
        assert as_user([*SSH, "slurm-debug", "true"]).returncode == 0
    proc = as_user([PROXY, "-v", "slurm-debug"], input=b"")
    assert text(proc).startswith("SSH-2.0-OpenSSH"), (proc.stdout[:200], err(proc))
    assert "slurm-proxy:" in err(proc)  # the chatter went to stderr


def test_unknown_profile_is_one_clear_line() -> None:
    proc = as_user([*SSH, "slurm-nope", "true"])
    assert proc.returncode == 255
    assert "unknown profile 'nope'" in err(proc) and "debug, gpu1, gpu2" in err(proc)
    assert "Traceback" not in err(proc)


def test_malformed_config_names_file_and_line(user_tmp: Path) -> None:
    bad = user_tmp / "bad.toml"
    cluster.write_config(bad, '[clusters.test]\nlogin = "testlogin"\n[profiles.debug\ncpus = 1\n')
    proc = as_user([*SSH, "slurm-debug", "true"], env={"SLURM_PROXY_CONFIG": str(bad)})
    assert proc.returncode == 255
    assert f"{bad}:3: invalid TOML" in err(proc), err(proc)
    assert "Traceback" not in err(proc)


def test_unreachable_login_node(user_tmp: Path) -> None:
    cfg = user_tmp / "down.toml"
    # nothing listens on 127.0.0.9:22
    cluster.write_config(cfg, '[clusters.gone]\nlogin = "127.0.0.9"\n[profiles.debug]\ncpus = 1\n')
    proc = as_user([*SSH, "slurm-debug", "true"], env={"SLURM_PROXY_CONFIG": str(cfg)})
    assert proc.returncode == 255
    assert "cannot reach login node '127.0.0.9'" in err(proc), err(proc)
    assert "Traceback" not in err(proc)


@pytest.mark.parametrize(("value", "refused_by"), [
    ("x;touch${IFS}%s;$(touch${IFS}%s)", "sbatch"),  # one word: quoted through, sbatch says no
    ("x; touch %s", "config"),  # not a partition name at all: refused before anything runs
])
def test_shell_metacharacters_never_run(user_tmp: Path, value: str, refused_by: str) -> None:
    pwned = Path("/tmp/pwned-slurm-proxy")
    pwned.unlink(missing_ok=True)
    cfg = user_tmp / "evil.toml"
    cluster.write_config(cfg, '[clusters.test]\nlogin = "testlogin"\n'
                              f'[profiles.debug]\npartition = "{value}"\n'.replace("%s", str(pwned)))
    proc = as_user([*SSH, "slurm-debug", "true"], env={"SLURM_PROXY_CONFIG": str(cfg)})
    assert proc.returncode == 255
    if refused_by == "sbatch":
        assert "sbatch failed" in err(proc) and "invalid partition" in err(proc).lower(), err(proc)
    else:
        assert f"{cfg}:4: partition = " in err(proc), err(proc)
    assert not pwned.exists()
    assert not jobs()
