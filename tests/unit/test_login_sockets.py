"""login/sockets.py: a socket path that fits every platform."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slurm_proxy.errors import SlurmProxyError
from slurm_proxy.login import sockets

LONG_HOME = Path("/Users/firstname.lastname-with-a-rather-long-name/Library/x")  # 56 characters


@pytest.mark.parametrize(("platform", "limit"), [("darwin", 103), ("freebsd14", 103), ("linux", 107)])
def test_limits(platform: str, limit: int) -> None:
    assert sockets.sun_path_max(platform) == limit


def test_a_short_state_dir_keeps_the_socket() -> None:
    path = sockets.socket_path("hpc", Path("/home/me/.local/state/slurm-proxy"), "darwin", uid=501)
    assert path.parent == Path("/home/me/.local/state/slurm-proxy/cm")
    assert path.name == sockets.short_name("hpc") == "42010a9e027e013c"  # crc32 + adler32: stable
    other = sockets.socket_path("hpc2", Path("/home/me/.local/state/slurm-proxy"), "darwin", uid=501)
    assert other.parent == path.parent and other.name != path.name


@pytest.mark.parametrize("platform", ["darwin", "linux"])
def test_a_long_home_moves_the_socket_to_a_short_private_dir(platform: str) -> None:
    state = LONG_HOME / ".local" / "state" / "slurm-proxy"
    assert len(str(LONG_HOME)) >= 56 and len(str(state / "cm" / ("0" * 16))) + 17 > 107
    path = sockets.socket_path("hpc", state, platform, uid=501)
    assert path.parent == Path("/tmp/slurm-proxy-501")
    assert len(os.fsencode(path)) + sockets.SSH_SUFFIX <= sockets.sun_path_max(platform)


def test_destinations_get_their_own_sockets() -> None:
    paths = {sockets.socket_path(d, Path("/s"), uid=1) for d in ("hpc", "hpc2", "me@hpc", "gpu-login")}
    assert len(paths) == 4


def test_too_long_everywhere_names_slurm_proxy_home() -> None:
    with pytest.raises(SlurmProxyError, match="SLURM_PROXY_HOME"):
        sockets.socket_path("hpc", Path("/x" * 60), "darwin", uid=1, tmp=Path("/t" * 60))
