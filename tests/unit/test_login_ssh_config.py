"""login/ssh_config.py: the user's ssh config as ssh resolves a host (no server needed)."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from slurm_proxy.login import ssh_config


def resolve(home: Path, text: str, name: str, system: str = "", **kw: object) -> ssh_config.Target:
    user = home / ".ssh" / "config"
    user.write_text(text)
    files = [str(user)]
    if system:
        (home / "system_config").write_text(system)
        files.append(str(home / "system_config"))
    return ssh_config.resolve(ssh_config.read_ssh_config(files), name, **kw)  # type: ignore[arg-type]


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
    config = ssh_config.read_ssh_config([str(home / "nope"), str(home / "neither")])
    assert ssh_config.resolve(config, "h").host == "h"


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
    assert ssh_config.parse_jump(spec) == parsed


@pytest.mark.parametrize("spec", ["", "alice@", "gw:port", "[::1"])
def test_parse_jump_refuses_nonsense(spec: str) -> None:
    with pytest.raises(ValueError, match="cannot read ProxyJump host"):
        ssh_config.parse_jump(spec)
