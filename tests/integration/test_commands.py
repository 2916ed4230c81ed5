"""init and doctor against the real cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from . import cluster
from .cluster import PROXY, as_user, err, text


def test_init_proposes_profiles_from_sinfo(user_tmp: Path, ssh_config_kept: None) -> None:
    target = user_tmp / "sp" / "config.toml"
    proc = as_user([PROXY, "init", "--login", "testlogin", "--non-interactive"],
                   env={"SLURM_PROXY_CONFIG": str(target)})
    assert proc.returncode == 0, err(proc)
    cfg = tomllib.loads(target.read_text())
    assert cfg["clusters"]["testlogin"]["login"] == "testlogin"
    assert cfg["profiles"]["debug"]["partition"] == "debug"
    assert cfg["profiles"]["debug-gpu"]["gres"] == "gpu:1"
    assert target.stat().st_mode & 0o777 == 0o600
    # never overwrites without being told to
    again = as_user([PROXY, "init", "--login", "testlogin", "--non-interactive"],
                    env={"SLURM_PROXY_CONFIG": str(target)})
    assert again.returncode == 1 and "not overwritten" in err(again)


def test_init_refuses_a_login_that_is_an_option(user_tmp: Path) -> None:
    proc = as_user([PROXY, "init", "--login=-oProxyCommand=touch /tmp/x", "--non-interactive"],
                   env={"SLURM_PROXY_CONFIG": str(user_tmp / "c.toml")})
    assert proc.returncode == 2 and "not an ssh destination" in err(proc)


def test_doctor_all_green_then_warns_about_vscode(user_tmp: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(user_tmp),
           "SLURM_PROXY_CONFIG": str(cluster.HOME / ".config/slurm-proxy/config.toml")}
    proc = as_user([PROXY, "doctor"], env=env)
    assert proc.returncode == 0, text(proc) + err(proc)
    for name in ("config", "ssh client", "login node testlogin", "Slurm commands",
                 "connection sharing"):
        assert f"✓ {name}:" in text(proc), text(proc)

    settings = user_tmp / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{\n  // comments are allowed here\n  "remote.SSH.connectTimeout": 15,\n}\n')
    for d in (settings.parent, settings.parent.parent):
        d.chmod(0o755)
    settings.chmod(0o644)
    proc = as_user([PROXY, "doctor"], env=env)
    assert "! VS Code connectTimeout: remote.SSH.connectTimeout is 15 s" in text(proc), text(proc)
    assert '"remote.SSH.connectTimeout": 300' in text(proc)


def test_doctor_reports_an_unreachable_login_node(user_tmp: Path) -> None:
    cfg = user_tmp / "down.toml"
    cluster.write_config(cfg, '[clusters.gone]\nlogin = "127.0.0.9"\n[profiles.debug]\ncpus = 1\n')
    proc = as_user([PROXY, "doctor"], env={"SLURM_PROXY_CONFIG": str(cfg)})
    assert proc.returncode == 1
    assert "✗ login node 127.0.0.9: cannot reach login node" in text(proc), text(proc)
    assert "fix: make `ssh 127.0.0.9` work" in text(proc)


def test_doctor_allocate_lands_on_the_node(clean: None) -> None:
    proc = as_user([PROXY, "doctor", "debug", "--allocate"])
    assert proc.returncode == 0, text(proc) + err(proc)
    assert "✓ ssh slurm-debug: admitted on the job's node" in text(proc)
    rows = {row["profile"]: row for row in json.loads(text(as_user([PROXY, "status", "--json"])))}
    assert rows["debug"]["state"] == "RUNNING"


def test_doctor_with_the_paramiko_backend_and_no_ssh_client(user_tmp: Path) -> None:
    cfg = user_tmp / "paramiko.toml"
    cluster.write_config(cfg, '[clusters.test]\nlogin = "testlogin"\nbackend = "paramiko"\n'
                              '[profiles.debug]\ncpus = 1\n')
    proc = as_user([PROXY, "doctor"], env={"SLURM_PROXY_CONFIG": str(cfg), "PATH": str(cluster.VENV / "bin"),
                                           "XDG_CONFIG_HOME": str(user_tmp)})
    assert proc.returncode == 0, text(proc) + err(proc)
    assert "! ssh client: " in text(proc) and "the login connection will use paramiko" in text(proc)
    assert "✓ login node testlogin: cluster test answers" in text(proc)
    assert "! connection sharing: paramiko logs in once per connect" in text(proc)
