"""node_keys.py: the keys the login node trusts for a compute node, from ``ssh-keygen -F``.

ssh-keygen -F prints ``# Host NODE found: line N `` (then ``CA`` or ``REVOKED`` for marked lines)
before each matching known_hosts line, as is.
"""

from __future__ import annotations

import pytest

from slurm_proxy import node_keys

ED = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"
HASHED = "|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg="


@pytest.mark.parametrize(
    ("output", "keys"),
    [
        pytest.param("", [], id="nothing-known"),
        pytest.param(f"# Host node1 found: line 3\nnode1 ssh-ed25519 {ED}\n",
                     [f"ssh-ed25519 {ED}"], id="plain"),
        pytest.param(f"# Host node1 found: line 3 \n{HASHED} ssh-rsa {RSA}\n",
                     [f"ssh-rsa {RSA}"], id="hashed"),
        pytest.param(f"node1,10.0.0.1 ssh-ed25519 {ED} root@node1\n",
                     [f"ssh-ed25519 {ED}"], id="host-list-and-comment-dropped"),
        pytest.param(f"# Host node1 found: line 1 CA\n@cert-authority *.cluster ssh-ed25519 {ED}\n", [],
                     id="cert-authority-dropped"),
        pytest.param(
            f"# Host node1 found: line 3\nnode1 ssh-ed25519 {ED}\n"
            f"# Host node1 found: line 9\nnode1 ssh-ed25519 {ED}\n"
            f"# Host node1 found: line 2\nnode1 ssh-rsa {RSA}\n",
            [f"ssh-ed25519 {ED}", f"ssh-rsa {RSA}"],
            id="duplicates-from-both-files-once-order-kept",
        ),
        pytest.param(f"\n   \n\tnode1   ssh-ed25519\t{ED}  \n", [f"ssh-ed25519 {ED}"],
                     id="blank-lines-and-odd-spacing"),
        pytest.param("node1 ssh-ed25519\nnode1\n", [], id="truncated-lines-dropped"),
        pytest.param(f"#node1 ssh-ed25519 {ED}\n", [], id="commented-out"),
    ],
)
def test_parse(output: str, keys: list[str]) -> None:
    assert node_keys.parse(output) == keys


def test_parse_never_keeps_a_host_name_or_newline() -> None:
    keys = node_keys.parse(f"node1 ssh-ed25519 {ED}\r\n{HASHED} ssh-rsa {RSA}\n")
    assert keys == [f"ssh-ed25519 {ED}", f"ssh-rsa {RSA}"]
    assert all(len(k.split()) == 2 for k in keys)


def test_parse_does_not_trust_a_revoked_key() -> None:
    output = (f"# Host node1 found: line 3\nnode1 ssh-rsa {RSA}\n"
              f"# Host node1 found: line 7 REVOKED\n@revoked * ssh-rsa {RSA}\n"
              f"# Host node1 found: line 4\nnode1 ssh-ed25519 {ED}\n")
    assert node_keys.parse(output) == [f"ssh-ed25519 {ED}"]


@pytest.mark.parametrize(
    ("output", "check"),
    [
        pytest.param(f"node1 ssh-ed25519 {ED}\n", node_keys.NodeCheck([f"ssh-ed25519 {ED}"]), id="adopt"),
        pytest.param(f"#port 20345\nnode1 ssh-ed25519 {ED}\n",
                     node_keys.NodeCheck([f"ssh-ed25519 {ED}"], 20345), id="sshd"),
        pytest.param("#error no sshd on node1 (install openssh-server there)\n",
                     node_keys.NodeCheck([], 0, "no sshd on node1 (install openssh-server there)"),
                     id="error"),
        pytest.param("#port 99999\n", node_keys.NodeCheck([], 0, "bad port '99999'"), id="port-out-of-range"),
        pytest.param("#port 22; rm -rf ~\n", node_keys.NodeCheck([], 0, "bad port '22; rm -rf ~'"),
                     id="port-not-a-number"),
        pytest.param("#error\n", node_keys.NodeCheck([], 0, "unknown error"), id="empty-error"),
        pytest.param("", node_keys.NodeCheck([]), id="nothing"),
    ],
)
def test_parse_check(output: str, check: node_keys.NodeCheck) -> None:
    assert node_keys.parse_check(output) == check
