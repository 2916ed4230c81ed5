"""login/known_hosts.py: the user's known_hosts read and matched as ssh does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import subprocess
from pathlib import Path

import pytest
from fakes import target

from slurm_proxy.errors import LoginError
from slurm_proxy.login import known_hosts

ED = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
ED2 = "AAAAC3NzaC1lZDI1NTE5AAAAIMCT6ebtbivVujCF5m9AbEkVzH/+CCcJgL5SXAtp0XcG"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"



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
    known = known_hosts.parse_known_hosts(line)
    assert known_hosts.check_host_key(known, name, "ssh-ed25519", blob(ED)) == verdict


def test_known_hosts_hashed_by_ssh_keygen(tmp_path: Path) -> None:
    """Entries as ``ssh-keygen -H`` (and HashKnownHosts) write them."""
    if not shutil.which("ssh-keygen"):
        pytest.skip("no ssh-keygen")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:2222 ssh-ed25519 {ED}\nlogin.example ssh-rsa {RSA}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "127.0.0.1" not in kh.read_text()
    known = known_hosts.read_known_hosts([str(tmp_path / "missing"), str(kh)])
    assert known_hosts.check_host_key(known, "[127.0.0.1]:2222", "ssh-ed25519", blob(ED)) == "ok"
    assert known_hosts.known_key_types(known, "login.example") == ["ssh-rsa"]


def test_known_key_types_in_file_order_once() -> None:
    known = known_hosts.parse_known_hosts(
        f"h ssh-rsa {RSA}\nh ssh-ed25519 {ED}\nh ssh-rsa {RSA}\nother ssh-dss {RSA}\n")
    assert known_hosts.known_key_types(known, "h") == ["ssh-rsa", "ssh-ed25519"]


def test_an_unknown_host_key_is_refused_with_one_line() -> None:
    with pytest.raises(LoginError) as e:
        known_hosts.verify([], target(), "ssh-ed25519", blob(ED), "testlogin")
    assert str(e.value) == ("cannot reach login node 'testlogin': host key for [127.0.0.1]:2222 is not in "
                            "your known_hosts: connect once with `ssh testlogin`")


def test_a_changed_host_key_is_refused_with_the_fingerprint() -> None:
    known = known_hosts.parse_known_hosts(f"[127.0.0.1]:2222 ssh-ed25519 {ED2}")
    with pytest.raises(LoginError) as e:
        known_hosts.verify(known, target(), "ssh-ed25519", blob(ED), "testlogin")
    line = str(e.value)
    assert "does not match your known_hosts" in line and known_hosts.fingerprint_of(blob(ED)) in line
    assert "ssh-keygen -R '[127.0.0.1]:2222'" in line and "\n" not in line


def test_fingerprint_is_sshs() -> None:
    if not shutil.which("ssh-keygen"):
        pytest.skip("no ssh-keygen")
    out = subprocess.run(["ssh-keygen", "-lf", "-"], input=f"ssh-ed25519 {ED}\n", capture_output=True,
                         text=True, check=True).stdout
    assert out.split()[1] == known_hosts.fingerprint_of(blob(ED))
