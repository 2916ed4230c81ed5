"""Stand-ins shared by the unit tests."""

from __future__ import annotations

from slurm_proxy.login import ssh_config


def target(**kw: object) -> ssh_config.Target:
    base: dict[str, object] = dict(
        name="testlogin", host="127.0.0.1", port=2222, user="u", identity_files=(), identities_only=False,
        known_hosts_files=(), host_key_alias=None, proxy_command=None, proxy_jump=(), connect_timeout=None,
        keepalive=0)
    base.update(kw)
    return ssh_config.Target(**base)  # type: ignore[arg-type]
