"""paramiko_login.py without a server: ssh config resolution, known_hosts, error lines, keys,
and the pump (a socketpair stands in for the SSH channel)."""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from slurm_proxy import login, prompt
from slurm_proxy import paramiko_login as pl
from slurm_proxy.errors import LoginError

ED = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
ED2 = "AAAAC3NzaC1lZDI1NTE5AAAAIMCT6ebtbivVujCF5m9AbEkVzH/+CCcJgL5SXAtp0XcG"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    return tmp_path


def resolve(home: Path, text: str, name: str, system: str = "", **kw: object) -> pl.Target:
    user = home / ".ssh" / "config"
    user.write_text(text)
    files = [str(user)]
    if system:
        (home / "system_config").write_text(system)
        files.append(str(home / "system_config"))
    return pl.resolve(pl.read_ssh_config(files), name, **kw)  # type: ignore[arg-type]


# --- ssh config -------------------------------------------------------------------------------

def test_resolve_reads_the_host_block(home: Path) -> None:
    t = resolve(home, """
Host login
    HostName 10.1.2.3
    User alice
    Port 2200
    IdentityFile ~/.ssh/work_key
    IdentityFile %d/.ssh/other_%r
    UserKnownHostsFile ~/.ssh/kh1 "~/.ssh/kh 2"
    GlobalKnownHostsFile /etc/cluster_known_hosts
    ConnectTimeout 7
    ServerAliveInterval 30
    IdentitiesOnly yes
""", "login")
    assert (t.name, t.host, t.user, t.port) == ("login", "10.1.2.3", "alice", 2200)
    assert t.identity_files == (f"{home}/.ssh/work_key", f"{home}/.ssh/other_alice")
    assert t.known_hosts_files == (f"{home}/.ssh/kh1", f"{home}/.ssh/kh 2", "/etc/cluster_known_hosts")
    assert t.connect_timeout == 7.0 and t.keepalive == 30 and t.identities_only
    assert (t.proxy_command, t.proxy_jump) == (None, ())
    assert t.host_key_name == "[10.1.2.3]:2200"


def test_resolve_defaults_are_sshs(home: Path) -> None:
    t = resolve(home, "", "cluster.example.org")
    assert (t.host, t.port, t.user) == ("cluster.example.org", 22, getpass.getuser())
    assert t.identity_files == tuple(f"{home}/.ssh/{k}" for k in ("id_rsa", "id_ecdsa", "id_ed25519"))
    assert t.known_hosts_files == (f"{home}/.ssh/known_hosts", f"{home}/.ssh/known_hosts2",
                                   "/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    assert t.host_key_name == "cluster.example.org"  # port 22: no [host]:port
    assert (t.connect_timeout, t.keepalive, t.identities_only) == (None, 0, False)


def test_first_value_wins_across_blocks_and_files(home: Path) -> None:
    t = resolve(home, "Host login\n  User first\nHost *\n  User second\n  Port 2022\n", "login",
                system="Host *\n  Port 9999\n  HostName from-system\n")
    assert (t.user, t.port, t.host) == ("first", 2022, "from-system")


def test_proxy_command_tokens_and_none(home: Path) -> None:
    text = ("Host a\n  HostName real-a\n  Port 2022\n  User bob\n  ProxyCommand nc -X 5 %h %p # %r\n"
            "Host b\n  ProxyCommand none\nHost *\n  ProxyCommand should-not-apply-to-b\n")
    assert resolve(home, text, "a").proxy_command == "nc -X 5 real-a 2022 # bob"
    assert resolve(home, text, "b").proxy_command is None


@pytest.mark.parametrize(
    ("value", "hops"),
    [
        ("bastion", ("bastion",)),
        ("alice@gw1:2222,gw2", ("alice@gw1:2222", "gw2")),
        ("none", ()),
    ],
)
def test_proxy_jump(home: Path, value: str, hops: tuple[str, ...]) -> None:
    assert resolve(home, f"Host login\n  ProxyJump {value}\n", "login").proxy_jump == hops


def test_jump_spec_user_and_port_win_over_the_config(home: Path) -> None:
    t = resolve(home, "Host gw\n  User cfguser\n  Port 2222\n  HostName gw.real\n", "gw", user="me", port=22)
    assert (t.user, t.port, t.host) == ("me", 22, "gw.real")


def test_host_key_alias_names_the_known_hosts_entry(home: Path) -> None:
    t = resolve(home, "Host login\n  HostName 10.0.0.1\n  Port 2222\n  HostKeyAlias cluster-login\n", "login")
    assert t.host_key_name == "cluster-login"


def test_include_is_followed(home: Path) -> None:
    (home / ".ssh" / "config.d").mkdir()
    (home / ".ssh" / "config.d" / "10-cluster.conf").write_text("Host login\n  HostName included.example\n")
    (home / ".ssh" / "config.d" / "20-more.conf").write_text("Host other\n  Port 2\n")
    t = resolve(home, "Include config.d/*.conf\nHost *\n  User everyone\n", "login")
    assert (t.host, t.user) == ("included.example", "everyone")


def test_path_lists_keep_backslashes_and_quoted_blanks(home: Path) -> None:
    t = resolve(home, 'Host w\n  UserKnownHostsFile C:\\Users\\me\\kh "D:\\my files\\kh"\n'
                      "  GlobalKnownHostsFile none\n", "w")
    assert t.known_hosts_files == ("C:\\Users\\me\\kh", "D:\\my files\\kh")


def test_a_bad_number_is_a_clear_error(home: Path) -> None:
    with pytest.raises(ValueError, match="port 'twenty' is not a number"):
        resolve(home, "Host login\n  Port twenty\n", "login")


def test_missing_config_files_are_empty(home: Path) -> None:
    config = pl.read_ssh_config([str(home / "nope"), str(home / "neither")])
    assert pl.resolve(config, "h").host == "h"


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("gw", (None, "gw", None)),
        ("alice@gw", ("alice", "gw", None)),
        ("alice@gw:2222", ("alice", "gw", 2222)),
        ("ssh://alice@gw:2222", ("alice", "gw", 2222)),
        ("[::1]:2222", (None, "::1", 2222)),
        ("a@b@gw", ("a@b", "gw", None)),
    ],
)
def test_parse_jump(spec: str, parsed: tuple[str | None, str, int | None]) -> None:
    assert pl.parse_jump(spec) == parsed


@pytest.mark.parametrize("spec", ["", "alice@", "gw:port", "[::1"])
def test_parse_jump_refuses_nonsense(spec: str) -> None:
    with pytest.raises(ValueError, match="cannot read ProxyJump host"):
        pl.parse_jump(spec)


# --- known_hosts ------------------------------------------------------------------------------

def hashed(name: str, salt: bytes = b"0123456789abcdefghij") -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def blob(key: str) -> bytes:
    return base64.b64decode(key)


@pytest.mark.parametrize(
    ("line", "name", "verdict"),
    [
        pytest.param(f"login.example ssh-ed25519 {ED}", "login.example", "ok", id="plain"),
        pytest.param(f"LOGIN.example ssh-ed25519 {ED}", "login.example", "ok", id="case-insensitive"),
        pytest.param(f"[127.0.0.1]:2222 ssh-ed25519 {ED}", "[127.0.0.1]:2222", "ok", id="bracket-port"),
        pytest.param(f"127.0.0.1 ssh-ed25519 {ED}", "[127.0.0.1]:2222", "unknown", id="port-matters"),
        pytest.param(f"[127.0.0.1]:2222 ssh-ed25519 {ED}", "[127.0.0.2]:2222", "unknown",
                     id="brackets-are-not-a-character-class"),
        pytest.param(f"{hashed('[127.0.0.1]:2222')} ssh-ed25519 {ED}", "[127.0.0.1]:2222", "ok", id="hashed"),
        pytest.param(f"{hashed('other')} ssh-ed25519 {ED}", "[127.0.0.1]:2222", "unknown", id="hashed-other"),
        pytest.param(f"a,login,b ssh-ed25519 {ED} comment", "login", "ok", id="name-list"),
        pytest.param(f"*.example ssh-ed25519 {ED}", "login.example", "ok", id="wildcard"),
        pytest.param(f"login?.example ssh-ed25519 {ED}", "login2.example", "ok", id="question-mark"),
        pytest.param(f"*.example,!login.example ssh-ed25519 {ED}", "login.example", "unknown", id="negated"),
        pytest.param(f"login ssh-ed25519 {ED2}", "login", "mismatch", id="mismatch"),
        pytest.param(f"login ssh-rsa {RSA}", "login", "unknown", id="only-another-type-known"),
        pytest.param(f"login ssh-ed25519 {ED}\n@revoked * ssh-ed25519 {ED}", "login", "revoked",
                     id="revoked"),
        pytest.param(f"@cert-authority login ssh-ed25519 {ED}", "login", "unknown",
                     id="ca-is-not-a-host-key"),
        pytest.param(f"# login ssh-ed25519 {ED}\n\nlogin ssh-ed25519 not-base64!", "login", "unknown",
                     id="comments-and-junk"),
    ],
)
def test_check_host_key(line: str, name: str, verdict: str) -> None:
    known = pl.parse_known_hosts(line)
    assert pl.check_host_key(known, name, "ssh-ed25519", blob(ED)) == verdict


def test_known_hosts_hashed_by_ssh_keygen(tmp_path: Path) -> None:
    """Entries as ``ssh-keygen -H`` (and HashKnownHosts) write them."""
    if not shutil.which("ssh-keygen"):
        pytest.skip("no ssh-keygen")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:2222 ssh-ed25519 {ED}\nlogin.example ssh-rsa {RSA}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "127.0.0.1" not in kh.read_text()
    known = pl.read_known_hosts([str(tmp_path / "missing"), str(kh)])
    assert pl.check_host_key(known, "[127.0.0.1]:2222", "ssh-ed25519", blob(ED)) == "ok"
    assert pl.known_key_types(known, "login.example") == ["ssh-rsa"]


def test_known_key_types_in_file_order_once() -> None:
    known = pl.parse_known_hosts(
        f"h ssh-rsa {RSA}\nh ssh-ed25519 {ED}\nh ssh-rsa {RSA}\nother ssh-dss {RSA}\n")
    assert pl.known_key_types(known, "h") == ["ssh-rsa", "ssh-ed25519"]


def target(**kw: object) -> pl.Target:
    base: dict[str, object] = dict(
        name="testlogin", host="127.0.0.1", port=2222, user="u", identity_files=(), identities_only=False,
        known_hosts_files=(), host_key_alias=None, proxy_command=None, proxy_jump=(), connect_timeout=None,
        keepalive=0)
    base.update(kw)
    return pl.Target(**base)  # type: ignore[arg-type]


def test_an_unknown_host_key_is_refused_with_one_line() -> None:
    with pytest.raises(LoginError) as e:
        pl._verify([], target(), "ssh-ed25519", blob(ED), "testlogin")
    assert str(e.value) == ("cannot reach login node 'testlogin': host key for [127.0.0.1]:2222 is not in "
                            "your known_hosts: connect once with `ssh testlogin`")


def test_a_changed_host_key_is_refused_with_the_fingerprint() -> None:
    known = pl.parse_known_hosts(f"[127.0.0.1]:2222 ssh-ed25519 {ED2}")
    with pytest.raises(LoginError) as e:
        pl._verify(known, target(), "ssh-ed25519", blob(ED), "testlogin")
    line = str(e.value)
    assert "does not match your known_hosts" in line and pl.fingerprint_of(blob(ED)) in line
    assert "ssh-keygen -R '[127.0.0.1]:2222'" in line and "\n" not in line


def test_fingerprint_is_sshs() -> None:
    if not shutil.which("ssh-keygen"):
        pytest.skip("no ssh-keygen")
    out = subprocess.run(["ssh-keygen", "-lf", "-"], input=f"ssh-ed25519 {ED}\n", capture_output=True,
                         text=True, check=True).stdout
    assert out.split()[1] == pl.fingerprint_of(blob(ED))


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("error", "line"),
    [
        (socket.gaierror(-2, "Name or service not known"),
         "cannot resolve h.example: Name or service not known"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
         "connect to h.example port 22: connection refused"),
        (TimeoutError("timed out"), "connect to h.example port 22: timed out"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "connect to h.example port 22: no route to host"),
        (EOFError(), "connect to h.example port 22: the server closed the connection"),
        (paramiko.SSHException("Error reading SSH protocol banner[Errno 104] Connection reset by peer"),
         "connect to h.example port 22: no SSH server answered (Error reading SSH protocol banner[Errno 104] "
         "Connection reset by peer)"),
        (paramiko.ChannelException(2, "Connect failed"), "the server refused a channel (connect failed)"),
        (paramiko.ProxyCommandFailure("nc h 22", "Broken pipe"), "ProxyCommand failed: nc h 22: Broken pipe"),
        (paramiko.SSHException("first line\n  second line\n"), "first line"),
        (paramiko.SSHException(""), "SSHException"),
    ],
)
def test_describe_is_one_line(error: BaseException, line: str) -> None:
    assert pl.describe(error, "h.example", 22) == line


# --- keys -------------------------------------------------------------------------------------

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
    keys = list(pl._keys(t, skipped))
    assert [label for _, label in keys] == ["~/plain"]
    assert keys[0][0].asbytes() == pl._public_blob(str(home / "plain"))
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
    keys = list(pl._keys(target(identity_files=(str(home / "locked"),)), skipped))
    assert [label for _, label in keys] == ["~/locked"] and skipped == []
    assert keys[0][0].asbytes() == pl._public_blob(str(home / "locked"))
    assert asked.read_text() == f"Enter passphrase for key '{home / 'locked'}': \n"


# --- the pump ---------------------------------------------------------------------------------

class SocketChannel:
    """A socketpair end with the parts of paramiko.Channel the pump uses."""

    def __init__(self, sock: socket.socket, stderr: socket.socket | None = None, status: int = 0) -> None:
        self.sock, self.stderr, self.status = sock, stderr, status
        self.closed = threading.Event()
        self.eof_sent = threading.Event()

    def recv(self, nbytes: int) -> bytes:
        return self.sock.recv(nbytes)

    def recv_stderr(self, nbytes: int) -> bytes:
        return self.stderr.recv(nbytes) if self.stderr else b""

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.eof_sent.set()
        self.sock.shutdown(socket.SHUT_WR)

    def recv_exit_status(self) -> int:
        return self.status

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def echo_then_trailer(peer: socket.socket, trailer: bytes) -> None:
    """The remote side: echo until our EOF, then (half-closed) send more, then close."""
    while data := peer.recv(65536):
        peer.sendall(data)
    peer.sendall(trailer)
    peer.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_pump_round_trips_and_drains_after_our_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    """10 MB echoed back, then bytes the peer sends only after it saw our EOF still arrive: the
    pump does not tear down on stdin EOF. With blocking sends on the draining thread this
    deadlocks (the socket buffers are far smaller than 10 MB)."""
    ours, peer = pair
    payload = os.urandom(10 * 1024 * 1024)
    threading.Thread(target=echo_then_trailer, args=(peer, b"after-eof"), daemon=True).start()
    got: list[bytes] = []
    channel = SocketChannel(ours, status=7)
    assert pl.pump(channel, pl.BytesSource(payload), got.append) == 7
    assert b"".join(got) == payload + b"after-eof"
    assert channel.eof_sent.is_set() and channel.closed.is_set()


def test_pump_copies_stderr_apart(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    err_ours, err_peer = socket.socketpair()
    err_peer.sendall(b"warning: something\n")
    err_peer.close()
    threading.Thread(target=echo_then_trailer, args=(peer, b""), daemon=True).start()
    out: list[bytes] = []
    err: list[bytes] = []
    pl.pump(SocketChannel(ours, err_ours), pl.BytesSource(b"data"), out.append, err.append)
    assert (b"".join(out), b"".join(err)) == (b"data", b"warning: something\n")
    err_ours.close()


def test_pump_from_a_pipe_through_fd_writers(pair: tuple[socket.socket, socket.socket]) -> None:
    """The stdio path: a polled fd in, fd_writer out (the output pipe is non-blocking and read
    slowly, so writes come back partial or EAGAIN)."""
    ours, peer = pair
    payload = os.urandom(3 * 1024 * 1024)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.set_blocking(out_w, False)
    threading.Thread(target=echo_then_trailer, args=(peer, b""), daemon=True).start()

    def feed() -> None:
        with os.fdopen(in_w, "wb") as f:
            f.write(payload)

    received = bytearray()

    def drain() -> None:
        while data := os.read(out_r, 4096):
            received.extend(data)
            time.sleep(0.0005)

    threading.Thread(target=feed, daemon=True).start()
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    source = pl.PolledFd(in_r)
    try:
        pl.pump(SocketChannel(ours), source, pl.fd_writer(out_w))
    finally:
        source.close()
        os.close(in_r)
        os.close(out_w)
    reader.join(10)
    assert bytes(received) == payload


def test_pump_stops_when_the_output_reader_is_gone(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"x" * 1000)

    def broken(data: bytes) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    in_r, in_w = os.pipe()  # stdin stays open: the pump must still end, and stop reading it
    source = pl.PolledFd(in_r)
    channel = SocketChannel(ours)
    try:
        assert pl.pump(channel, source, broken) == -1
    finally:
        source.close()
        os.close(in_r)
        os.close(in_w)
    assert channel.closed.is_set()


def test_polled_fd_stop_ends_a_pending_read() -> None:
    r, w = os.pipe()
    source = pl.PolledFd(r)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(source.read(100)))
    reader.start()
    time.sleep(0.05)
    assert reader.is_alive()  # waiting for stdin
    assert source.stop() is True
    reader.join(5)
    assert got == [b""]
    source.close()
    os.close(r)
    os.close(w)


def test_polled_fd_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_bytes(b"from a file")
    fd = os.open(path, os.O_RDONLY)
    source = pl.PolledFd(fd)  # epoll refuses regular files: read directly
    assert (source.read(100), source.read(100)) == (b"from a file", b"")
    source.close()
    os.close(fd)


def test_the_stdin_source_follows_slurm_proxy_no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_PROXY_NO_EXEC", raising=False)
    source = pl.stdin_source()
    assert isinstance(source, pl.PolledFd) if os.name != "nt" else isinstance(source, pl.BlockingFd)
    source.close()
    monkeypatch.setenv("SLURM_PROXY_NO_EXEC", "1")
    assert isinstance(pl.stdin_source(), pl.BlockingFd)


def test_blocking_fd_cannot_be_stopped() -> None:
    r, w = os.pipe()
    os.write(w, b"abc")
    os.close(w)
    source = pl.BlockingFd(r)
    assert (source.read(10), source.read(10), source.stop()) == (b"abc", b"", False)
    os.close(r)


# --- choosing the backend -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("backend", "ssh_installed", "chosen"),
    [("", True, "OpenSSHLogin"), ("", False, "ParamikoLogin"), ("paramiko", True, "ParamikoLogin"),
     ("openssh", True, "OpenSSHLogin")],
)
def test_open_login_prefers_openssh_unless_told_or_missing(
        backend: str, ssh_installed: bool, chosen: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_PROXY_SSH", raising=False)
    if ssh_installed:
        fake = tmp_path / "ssh"
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert type(login.open_login("hpc", backend)).__name__ == chosen


def test_open_login_with_openssh_asked_for_but_missing_says_so(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_PROXY_SSH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LoginError, match="no `ssh` client found"):
        login.open_login("hpc", "openssh")
