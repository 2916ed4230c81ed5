"""login/auth.py: which keys are offered, in ssh's order, and an encrypted one's passphrase."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fakes import target

from slurm_proxy.login import auth, prompt


def keygen(path: Path, passphrase: str = "") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="no ssh-keygen")
def test_key_files_in_order_and_a_locked_one_is_named(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("SSH_ASKPASS", raising=False)
    monkeypatch.setattr(prompt, "has_tty", lambda: False)
    keygen(home / "locked", "secret")
    keygen(home / "plain")
    skipped: list[str] = []
    t = target(identity_files=(str(home / "missing"), str(home / "locked"), str(home / "plain")))
    keys = list(auth._keys(t, skipped, prompt.ask))
    assert [label for _, label in keys] == ["~/plain"]
    assert keys[0][0].asbytes() == auth._public_blob(str(home / "plain"))
    assert skipped == ["~/locked (has a passphrase, and none was given)"]


def test_a_locked_key_file_is_opened_with_the_passphrase_askpass_gives_once(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    keygen(home / "locked", "secret")
    asked = home / "asked"
    program = home / "askpass"
    program.write_text(f'#!/bin/sh\necho "$1" >> {asked}\necho secret\n')
    program.chmod(0o755)
    monkeypatch.setenv("SSH_ASKPASS", str(program))
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")
    skipped: list[str] = []
    keys = list(auth._keys(target(identity_files=(str(home / "locked"),)), skipped, prompt.ask))
    assert [label for _, label in keys] == ["~/locked"] and skipped == []
    assert keys[0][0].asbytes() == auth._public_blob(str(home / "locked"))
    assert asked.read_text() == f"Enter passphrase for key '{home / 'locked'}': \n"


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="no ssh-keygen")
@pytest.mark.parametrize(("kind", "extra"), [
    ("ed25519", []), ("rsa", ["-b", "1024"]), ("rsa", ["-m", "PEM", "-b", "1024"]), ("ecdsa", ["-m", "PEM"])])
def test_a_locked_key_file_is_told_from_its_bytes_alone(home: Path, kind: str, extra: list[str]) -> None:
    """Before cryptography 45 a locked key fails to load like a corrupt one: the file itself
    must say it wants a passphrase."""
    for passphrase in ("", "secret"):
        path = home / f"{kind}-{len(extra)}-{bool(passphrase)}"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", passphrase, "-f", str(path)],
                       check=True)
        assert auth.encrypted(path.read_bytes()) is bool(passphrase)
    assert not auth.encrypted(b"")
    assert not auth.encrypted(b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!\n-----END")


@pytest.mark.skipif(not (shutil.which("ssh-agent") and shutil.which("ssh-add")), reason="no ssh-agent")
def test_the_ssh_agent_is_the_one_passed_not_the_environments(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The login agent logs in for connects of other environments: it passes each one's ssh-agent."""
    keygen(home / "in_agent")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent never listened"
            time.sleep(0.02)
        subprocess.run(["ssh-add", "-q", str(home / "in_agent")], env={"SSH_AUTH_SOCK": str(sock)},
                       check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "the-agents-own"))  # none listens there
        keys = list(auth._keys(target(), [], prompt.ask, str(sock)))
        assert [k.asbytes() for k, _ in keys] == [auth._public_blob(str(home / "in_agent"))]
        assert keys[0][1].startswith("from ssh-agent")
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        assert list(auth._keys(target(), [], prompt.ask, "")) == []  # the connect had none
        assert len(list(auth._keys(target(), [], prompt.ask))) == 1  # None: the environment's
    finally:
        agent.terminate()
        agent.wait()
