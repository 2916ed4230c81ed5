"""state.py: the local record of submitted jobs, one private JSON file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from slurm_proxy import log, paths
from slurm_proxy.state import VERSION, JobRecord, State


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> State:
    monkeypatch.setattr(log, "verbosity", 0)
    return State(paths.state_dir())  # the root conftest points it at the test's own directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"
A = JobRecord(job_id="42", profile="hpc.gpu", submitted=1700000000.5)
B = JobRecord(job_id="43", profile="hpc.debug", submitted=1700000001.0, alias="slurm-debug",
              node="node7", host_keys=(ED, RSA))


def test_empty_when_missing(state: State) -> None:
    assert state.jobs() == {}
    assert state.job("hpc.gpu") is None
    assert not state.dir.exists()  # reading creates nothing


def test_record_and_read_back(state: State) -> None:
    state.record(A)
    state.record(B)
    assert state.jobs() == {"hpc.gpu": A, "hpc.debug": B}
    assert state.job("hpc.debug") == B
    assert State(state.dir).jobs() == {"hpc.gpu": A, "hpc.debug": B}  # a fresh reader agrees


def test_record_replaces_the_profiles_job(state: State) -> None:
    state.record(A)
    newer = JobRecord(job_id="50", profile="hpc.gpu", submitted=1700000100.0, alias="slurm-gpu",
                      node="gpu01", host_keys=(ED,))
    state.record(newer)
    assert state.jobs() == {"hpc.gpu": newer}


@pytest.mark.parametrize(
    ("job_id", "kept"),
    [(None, False), ("42", False), ("41", True)],
    ids=["any-job", "same-job", "other-job"],
)
def test_forget(state: State, job_id: str | None, kept: bool) -> None:
    state.record(A)
    state.record(B)
    state.forget("hpc.gpu", job_id)
    assert state.job("hpc.gpu") == (A if kept else None)
    assert state.job("hpc.debug") == B


def test_forget_unknown_profile_is_harmless(state: State) -> None:
    state.forget("hpc.none")
    assert state.jobs() == {}


def test_file_and_directory_are_private(state: State) -> None:
    state.record(A)
    assert mode(state.path) == 0o600
    assert mode(state.dir) == 0o700
    data = json.loads(state.path.read_text())
    assert data["version"] == VERSION
    assert data["jobs"]["hpc.gpu"] == {"job_id": "42", "profile": "hpc.gpu", "submitted": 1700000000.5,
                                       "alias": "", "node": "", "host_keys": [], "port": 0,
                                       "mode": "", "login": "", "ends": 0.0}
    assert mode(state.known_hosts) == 0o600
    assert not [p for p in state.dir.iterdir() if p.name.endswith(".tmp")]


def test_known_hosts_lists_each_alias_keys(state: State) -> None:
    state.record(A)  # no alias, no keys: no line
    assert state.known_hosts.read_text() == ""
    state.record(B)
    gpu = JobRecord(job_id="50", profile="hpc.gpu", submitted=1.0, alias="slurm-gpu", node="gpu01",
                    host_keys=(ED,))
    state.record(gpu)
    assert sorted(state.known_hosts.read_text().splitlines()) == sorted(
        [f"slurm-debug {ED}", f"slurm-debug {RSA}", f"slurm-gpu {ED}"])
    state.forget("hpc.debug", "43")
    assert state.known_hosts.read_text() == f"slurm-gpu {ED}\n"
    state.forget("hpc.gpu")
    assert state.known_hosts.read_text() == ""


def test_known_hosts_follows_a_new_node(state: State) -> None:
    state.record(B)
    moved = B._replace(job_id="44", node="node8", host_keys=(RSA,))
    state.record(moved)
    assert state.known_hosts.read_text() == f"slurm-debug {RSA}\n"
    assert state.job("hpc.debug") == moved


def test_known_hosts_symlink_is_replaced_not_followed(state: State, tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("precious\n")
    state.dir.mkdir(mode=0o700)
    state.known_hosts.symlink_to(target)
    state.record(B)
    assert target.read_text() == "precious\n"
    assert not state.known_hosts.is_symlink()


def test_open_directory_is_tightened(state: State) -> None:
    state.dir.mkdir(mode=0o755)
    state.dir.chmod(0o755)
    state.record(A)
    assert mode(state.dir) == 0o700


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[]", b'"text"', b'{"jobs": {}}', b'{"version": 99, "jobs": {}}', b"\xff\xfe{"],
    ids=["syntax", "empty", "list", "string", "no-version", "future-version", "not-utf8"],
)
def test_corrupt_file_is_moved_aside(state: State, content: bytes,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    state.dir.mkdir()
    state.path.write_bytes(content)
    assert state.jobs() == {}
    assert not state.path.exists()
    aside = list(state.dir.glob("state.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == content
    assert "state file was corrupt" in capsys.readouterr().err
    state.record(A)  # and a fresh one is started
    assert state.jobs() == {"hpc.gpu": A}


def test_malformed_records_are_dropped(state: State) -> None:
    state.dir.mkdir()
    state.path.write_text(json.dumps({"version": VERSION, "jobs": {
        "hpc.gpu": {"job_id": "42", "profile": "hpc.gpu", "submitted": 1700000000.5},
        "hpc.bad": {"job_id": "1"},
        "hpc.extra": {"job_id": "1", "profile": "hpc.extra", "submitted": 0, "colour": "red"},
        "hpc.str": "42",
        "hpc.list": [],
    }}))
    assert state.jobs() == {"hpc.gpu": A}


def test_jobs_not_a_table(state: State) -> None:
    state.dir.mkdir()
    state.path.write_text(json.dumps({"version": VERSION, "jobs": ["x"]}))
    assert state.jobs() == {}


@pytest.mark.parametrize("target_exists", [True, False], ids=["to-a-state-file", "dangling"])
def test_symlinked_state_file_is_refused(state: State, tmp_path: Path, target_exists: bool) -> None:
    target = tmp_path / "elsewhere.json"
    original = json.dumps({"version": VERSION, "jobs": {}})
    if target_exists:
        target.write_text(original)
    state.dir.mkdir()
    state.path.symlink_to(target)
    with pytest.raises(paths.UnsafePath):
        state.jobs()
    with pytest.raises(paths.UnsafePath):
        state.record(A)
    with pytest.raises(paths.UnsafePath):
        state.forget("hpc.gpu")
    assert state.path.is_symlink()  # never replaced or followed
    if target_exists:
        assert target.read_text() == original
    else:
        assert not target.exists()


def test_state_file_that_is_a_directory_is_refused(state: State) -> None:
    state.path.mkdir(parents=True)
    with pytest.raises(paths.UnsafePath):
        state.jobs()


def test_symlinked_state_directory_is_refused_for_writing(state: State, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    state.dir.symlink_to(real)
    with pytest.raises(paths.UnsafePath):
        state.record(A)
    assert list(real.iterdir()) == []


# --- what an alias trusts ---------------------------------------------------------------------

def test_known_hosts_holds_only_what_trust_vouches_for(tmp_path: Path) -> None:
    other = B._replace(profile="otp.debug", job_id="30", host_keys=(RSA,))
    state = State(tmp_path / "home", trust=lambda key, rec: key == "hpc.debug")
    state.record(B._replace(host_keys=(ED,)))
    state.record(other)  # the same alias from another cluster: trusts nothing
    assert state.known_hosts.read_text() == f"slurm-debug {ED}\n"


def test_sync_rewrites_known_hosts_only_when_the_trust_changed(tmp_path: Path) -> None:
    State(tmp_path / "home").record(B)  # written by a config that trusted it
    assert State(tmp_path / "home").known_hosts.read_text() != ""
    before = (tmp_path / "home" / "known_hosts").stat().st_mtime_ns
    State(tmp_path / "home").sync_known_hosts()  # same trust: a read, no write
    assert (tmp_path / "home" / "known_hosts").stat().st_mtime_ns == before
    State(tmp_path / "home", trust=lambda key, rec: False).sync_known_hosts()
    assert (tmp_path / "home" / "known_hosts").read_text() == ""
    assert State(tmp_path / "home").job("hpc.debug") == B  # the record itself stays


def test_forget_where_writes_nothing_when_nothing_is_stale(state: State) -> None:
    state.record(A)
    before = state.path.stat().st_mtime_ns
    state.forget_where(lambda rec: rec.job_id == "nope")
    assert state.path.stat().st_mtime_ns == before
    state.record(B)
    state.forget_where(lambda rec: rec.job_id == "42")
    assert set(State(state.dir).jobs()) == {"hpc.debug"}


def test_a_directory_inside_ours_makes_ours_private_first(tmp_path: Path) -> None:
    ours = paths.state_dir()
    assert not ours.exists()
    paths.private_dir(ours / "cm")
    assert mode(ours) == 0o700 and mode(ours / "cm") == 0o700
