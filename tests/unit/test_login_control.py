"""login/control.py: one creator of an OpenSSH master, the others waiting and sharing it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurm_proxy import log, warm
from slurm_proxy.errors import LoginError
from slurm_proxy.login import control


def listen(path: Path) -> socket.socket:
    """A Unix socket standing in for ssh's master: it takes every connection and drops it."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)

    def serve() -> None:
        while True:
            try:
                server.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cm" / "0123456789abcdef"
    path.parent.mkdir(mode=0o700)
    server = listen(path)
    yield path
    server.close()


def test_a_live_master_takes_no_lock(master: Path) -> None:
    assert warm.master_alive(master)
    with control.one_creator(master, "hpc"):
        pass
    assert not Path(f"{master}.lock").exists()


def test_a_dead_socket_is_not_a_master(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file stays, nobody listens: a master that died
    assert stale.exists() and not warm.master_alive(stale)
    assert not warm.master_alive(tmp_path / "missing")


def test_one_creator_the_others_wait_then_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(log, "verbosity", 0)
    path = tmp_path / "cm" / "0123456789abcdef"
    created: list[str] = []
    server: list[socket.socket] = []

    def connect(name: str) -> None:
        with control.one_creator(path, "hpc"):
            if not warm.master_alive(path):  # what ssh's ControlMaster=auto would do
                time.sleep(0.3)  # the user types the code
                server.append(listen(path))
                created.append(name)

    threads = [threading.Thread(target=connect, args=(f"c{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 1
    assert "another slurm-proxy is authenticating" in capsys.readouterr().err
    server[0].close()


def test_a_failed_login_fails_the_waiters_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "cm" / "0123456789abcdef"
    attempts: list[str] = []
    errors: list[str] = []
    started = threading.Barrier(4)

    def connect(name: str) -> None:
        started.wait()
        try:
            with control.one_creator(path, "hpc"):
                attempts.append(name)
                time.sleep(0.3)
                raise LoginError("hpc", "Permission denied (keyboard-interactive).")
        except LoginError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=connect, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(attempts) == 1  # one prompt, not four
    assert errors == ["cannot reach login node 'hpc': Permission denied (keyboard-interactive)."] * 4


def test_sharing_decides_the_socket_before_reading_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor may ask before any command ran: the managed socket is still reported as ours."""
    from slurm_proxy.login import openssh

    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\nexit 255\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SLURM_PROXY_SSH", str(fake))
    # the user's ssh config sets no ControlPath
    monkeypatch.setattr(openssh.OpenSSHLogin, "_ask_ssh_g", lambda self: False)
    shared, how = openssh.OpenSSHLogin("hpc").sharing()
    assert shared is False and "own ControlPath" not in how
