"""allocate.py: find or submit the profile's job and wait for it, against a fake login node."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeLogin

from slurm_proxy import allocate, jobscript, log, manage, paths, progress, queue, renewal, slurm
from slurm_proxy.allocate import Allocator
from slurm_proxy.config import Cluster, Config, Profile
from slurm_proxy.errors import AllocationTimeout, JobEnded, NodeError, SlurmError, SlurmOutputError
from slurm_proxy.login import Result
from slurm_proxy.state import JobRecord, State

PROFILE = Profile(name="debug", cluster=Cluster(name="hpc", login="hpc"), partition="debug",
                  time="1:00:00", pending_timeout=60)
COMMENT = "slurm-proxy:hpc.debug"


def line(job_id: str = "42", state: str = "PENDING", reason: str = "Priority", nodes: str = "",
         start: str = "N/A", name: str = "slurm-proxy-debug", comment: str = COMMENT) -> str:
    return "|".join([job_id, state, reason, nodes, start, "1:00:00", name, comment])


RUNNING = line(state="RUNNING", reason="None", nodes="node1", start="2026-11-28T13:41:07")
PENDING = line()
EMPTY = Result(0, "", "")
ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
KEYS = Result(0, f"# Host node1 found: line 3 \nnode1 {ED}\n", "")


def out(*lines: str) -> Result:
    return Result(0, "".join(ln + "\n" for ln in lines), "")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> State:
    monkeypatch.setattr(log, "verbosity", 0)
    return State(paths.state_dir())  # the root conftest points it at the test's own directory


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def allocator(login: FakeLogin, state: State, clock: FakeClock, profile: Profile = PROFILE,
              **kw: Any) -> Allocator:
    return Allocator(login, profile, state, alias="slurm-debug", clock=clock, sleep=clock.sleep, **kw)


SQUEUE = slurm.squeue_argv()
SBATCH = slurm.sbatch_argv(PROFILE.sbatch_options(), "slurm-proxy-debug", COMMENT)
LOOKUP = jobscript.node_check_argv("adopt", "node1", "42")
NODE1: dict[str, Any] = dict(alias="slurm-debug", node="node1", host_keys=(ED,), mode="adopt", login="hpc")


# --- poll_delays ------------------------------------------------------------------------------

def test_poll_delays() -> None:
    delays = list(itertools.islice(allocate.poll_delays(), 40))
    assert delays[:3] == [0.25, 0.5, 0.5]
    fast = list(itertools.takewhile(lambda d: d < 5.0, delays))
    assert fast[1:] == [0.5] * (len(fast) - 1)
    assert 10.0 <= sum(fast) <= 10.5
    assert delays[len(fast):] == [5.0] * (40 - len(fast))


def test_poll_delays_never_faster_than_5s_later_on() -> None:
    delays = allocate.poll_delays()
    later = list(itertools.islice(delays, 100, 1000))
    assert set(later) == {5.0}


# --- warm path --------------------------------------------------------------------------------

def test_warm_path_is_one_query_by_job_id(state: State, clock: FakeClock) -> None:
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **NODE1))
    before = {p.name: p.stat().st_mtime_ns for p in state.dir.iterdir()}
    login = FakeLogin(squeue=[out(RUNNING)])
    got = allocator(login, state, clock).ensure_running()
    assert (got.job.job_id, got.job.node, got.mode, got.submitted) == ("42", "node1", "adopt", False)
    assert login.calls == [SQUEUE]  # one query
    assert clock.sleeps == []
    assert not (state.dir / "locks").exists()
    assert {p.name: p.stat().st_mtime_ns for p in state.dir.iterdir()} == before  # nothing written


def test_running_job_found_unrecorded_is_adopted_with_its_host_keys(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[out(RUNNING)], bash=[KEYS])
    allocator(login, state, clock).ensure_running()
    assert login.calls == [SQUEUE, LOOKUP]  # still no lock, no sbatch
    assert not (state.dir / "locks").exists()
    record = state.job("hpc.debug")
    assert record is not None
    assert record._replace(submitted=0.0, ends=0.0) == JobRecord("42", "hpc.debug", 0.0, **NODE1)
    assert state.known_hosts.read_text() == f"slurm-debug {ED}\n"


def test_records_take_their_times_from_the_injected_wall_clock(state: State, clock: FakeClock) -> None:
    state.record(JobRecord("7", "hpc.old", 1_699_999_000.0, login="hpc"))  # gone, older than a minute
    state.record(JobRecord("8", "hpc.gpu", 1_699_999_990.0, login="hpc"))  # gone, but a concurrent submit?
    login = FakeLogin(squeue=[out(RUNNING)], bash=[KEYS])
    allocator(login, state, clock, wall=lambda: 1_700_000_000.0).ensure_running()
    record = state.job("hpc.debug")
    assert record is not None and (record.job_id, record.submitted, record.ends) == (
        "42", 1_700_000_000.0, 1_700_003_600.0)  # adopted now; its 1:00:00 left end then
    assert state.job("hpc.old") is None
    assert state.job("hpc.gpu") is not None  # younger than FORGET_AFTER by that clock


@pytest.mark.parametrize(
    "recorded",
    [dict(NODE1, node="old-node"), dict(NODE1, alias="debug"),
     dict(alias="", node="", host_keys=(), login="hpc")],
    ids=["other-node", "other-alias", "submitted-not-yet-running"],
)
def test_recorded_job_keeps_its_submission_time(state: State, clock: FakeClock,
                                                recorded: dict[str, Any]) -> None:
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **recorded))
    login = FakeLogin(squeue=[out(RUNNING)], bash=[KEYS])
    allocator(login, state, clock).ensure_running()
    assert login.commands == ["squeue", "bash"]
    assert state.job("hpc.debug")._replace(ends=0.0) == JobRecord(  # type: ignore[union-attr]
        "42", "hpc.debug", 1700000000.0, **NODE1)


@pytest.mark.parametrize(
    ("answer", "message"),
    [(Result(0, "#error node1:22 refuses connections from the login node\n", ""),
      "job 42 on node1: node1:22 refuses connections from the login node"),
     (Result(1, "", "bash: fatal\n"), "job 42 on node1: bash: fatal")],
    ids=["refused", "check-failed"],
)
def test_a_node_that_cannot_take_the_session_is_an_error_and_not_recorded(
        state: State, clock: FakeClock, answer: Result, message: str) -> None:
    login = FakeLogin(squeue=[out(RUNNING)], bash=[answer])
    with pytest.raises(NodeError) as e:
        allocator(login, state, clock).ensure_running()
    assert str(e.value) == message
    assert state.job("hpc.debug") is None  # the next connect looks again


def test_mode_sshd_records_the_port_and_the_users_host_key(state: State, clock: FakeClock) -> None:
    profile = PROFILE._replace(mode="sshd")
    login = FakeLogin(squeue=[out(RUNNING)], bash=[out("#port 20345", f"node1 {ED}")])
    got = allocator(login, state, clock, profile).ensure_running()
    assert login.calls[1] == jobscript.node_check_argv("sshd", "node1", "42")
    assert got.port == 20345
    assert state.job("hpc.debug")._replace(ends=0.0) == JobRecord(  # type: ignore[union-attr]
        "42", "hpc.debug", state.job("hpc.debug").submitted,  # type: ignore[union-attr]
                                               port=20345, **{**NODE1, "mode": "sshd"})
    warm = FakeLogin(squeue=[out(RUNNING)])
    again = allocator(warm, state, clock, profile).ensure_running()
    assert warm.commands == ["squeue"] and again.port == 20345


def test_a_mode_change_checks_the_node_again(state: State, clock: FakeClock) -> None:
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **NODE1))
    login = FakeLogin(squeue=[out(RUNNING)], bash=[out(f"node1 {ED}")])
    allocator(login, state, clock, PROFILE._replace(mode="srun")).ensure_running()
    assert login.calls[1] == jobscript.node_check_argv("srun", "node1", "42")
    assert state.job("hpc.debug").mode == "srun"  # type: ignore[union-attr]


def test_no_host_key_is_recorded_as_none(state: State, clock: FakeClock,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    login = FakeLogin(squeue=[out(RUNNING)], bash=[EMPTY])
    allocator(login, state, clock).ensure_running()
    record = state.job("hpc.debug")
    assert record is not None and record.host_keys == ()
    assert state.known_hosts.read_text() == ""
    assert "knows no host key for node1" in capsys.readouterr().err


# --- cold path --------------------------------------------------------------------------------

def test_no_job_submits_one_and_waits(state: State, clock: FakeClock) -> None:
    login = FakeLogin(
        squeue=[EMPTY, EMPTY, out(PENDING), out(line(reason="Resources")), out(RUNNING)],
        sbatch=[Result(0, "42\n", "")],
        bash=[KEYS],
    )
    got = allocator(login, state, clock).ensure_running()
    assert got.job.ready and got.job.job_id == "42"
    assert login.calls == [SQUEUE, SQUEUE, SBATCH, SQUEUE, SQUEUE, SQUEUE, LOOKUP]
    assert login.stdin[2] == jobscript.batch_script(PROFILE)  # the script goes on stdin
    assert all(login.stdin[i] is None for i in (0, 1, 3, 4, 5, 6))
    assert clock.sleeps == [0.25, 0.5, 0.5]
    assert got.submitted
    assert (state.dir / "locks").is_dir()
    record = state.job("hpc.debug")
    assert record is not None
    assert record._replace(submitted=0.0, ends=0.0) == JobRecord("42", "hpc.debug", 0.0, **NODE1)


def test_job_found_under_the_lock_is_not_submitted_again(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[EMPTY, out(PENDING), out(RUNNING)], bash=[KEYS])
    got = allocator(login, state, clock).ensure_running()
    assert got.job.job_id == "42"
    assert login.commands == ["squeue", "squeue", "squeue", "bash"]
    assert not got.submitted


def test_pending_job_shows_progress_until_it_runs(state: State, clock: FakeClock,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pending = out(line(reason="Resources", start="2026-11-28T14:00:00"))
    login = FakeLogin(squeue=[pending, pending, pending, out(line(reason="Priority")), out(RUNNING)],
                      bash=[KEYS])
    job = allocator(login, state, clock).ensure_running().job
    assert job.ready
    assert login.commands == ["squeue"] * 5 + ["bash"]  # found pending: no lock, no sbatch
    assert len(clock.sleeps) == 4
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "slurm-proxy: job 42 pending (Resources), expected start 2026-11-28T14:00:00",
        "slurm-proxy: job 42 pending (Priority)",
        "slurm-proxy: job 42 running on node1",
    ]


def test_running_in_prolog_is_not_ready(state: State, clock: FakeClock) -> None:
    prolog = out(line(state="RUNNING", reason="Prolog", nodes="node1"))
    login = FakeLogin(squeue=[prolog, prolog, out(RUNNING)], bash=[KEYS])
    job = allocator(login, state, clock).ensure_running().job
    assert job.ready and job.reason == ""
    assert clock.sleeps == [0.25, 0.5]


@pytest.mark.parametrize(
    "gone",
    [EMPTY, out(line(state="CANCELLED", reason="None")), out(line(state="FAILED")),
     out(line(job_id="43"))],
    ids=["vanished", "cancelled", "failed", "another-job"],
)
def test_job_ending_while_waiting(state: State, clock: FakeClock, gone: Result) -> None:
    login = FakeLogin(squeue=[EMPTY, EMPTY, out(PENDING), gone], sbatch=[Result(0, "42", "")], sh=[EMPTY])
    with pytest.raises(JobEnded) as info:
        allocator(login, state, clock).ensure_running()
    assert info.value.job_id == "42"
    assert str(info.value) == "job 42 ended (no longer in the queue) before it could be used; connect again"
    assert "scancel" not in login.commands
    assert login.calls[-1] == jobscript.said_argv("42")


def test_a_job_whose_script_gave_up_says_why(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[EMPTY, EMPTY, out(PENDING), EMPTY], sbatch=[Result(0, "42", "")],
                      sh=[out("error no sshd on node1 (install openssh-server there, or use mode adopt)")])
    with pytest.raises(JobEnded) as info:
        allocator(login, state, clock, PROFILE._replace(mode="sshd")).ensure_running()
    assert str(info.value) == ("job 42 ended before it could be used: no sshd on node1 (install "
                               "openssh-server there, or use mode adopt)")


def test_timeout_cancels_the_job_it_submitted(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[EMPTY, EMPTY, out(line(reason="Resources"))],
                      sbatch=[Result(0, "42;hpc\n", "")], scancel=[EMPTY])
    with pytest.raises(AllocationTimeout) as info:
        allocator(login, state, clock).ensure_running()
    assert info.value.cancelled is True
    assert info.value.job_id == "42"
    assert info.value.reason == "Resources"
    assert info.value.waited >= PROFILE.pending_timeout
    assert "cancelled it" in str(info.value)
    assert login.calls[-1] == slurm.scancel_argv(["42"])
    assert login.commands.count("scancel") == 1
    assert state.job("hpc.debug") is None
    assert max(clock.sleeps) == 5.0


def test_timeout_leaves_a_job_it_found(state: State, clock: FakeClock) -> None:
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **NODE1))
    login = FakeLogin(squeue=[out(PENDING)])
    with pytest.raises(AllocationTimeout) as info:
        allocator(login, state, clock).ensure_running()
    assert info.value.cancelled is False
    assert info.value.reason == "Priority"
    assert "left it queued" in str(info.value)
    assert "scancel" not in login.commands and "sbatch" not in login.commands
    assert state.job("hpc.debug") is not None


def test_timeout_zero_gives_up_at_once(state: State, clock: FakeClock) -> None:
    profile = Profile(name="debug", cluster=Cluster("hpc", "hpc"), pending_timeout=0)
    login = FakeLogin(squeue=[out(PENDING)])
    with pytest.raises(AllocationTimeout):
        allocator(login, state, clock, profile).ensure_running()
    assert clock.sleeps == []


def test_sbatch_failure(state: State, clock: FakeClock) -> None:
    stderr = ("sbatch: warning: ignoring something\n"
              "sbatch: error: Batch job submission failed: Invalid partition name specified\n\n")
    login = FakeLogin(squeue=[EMPTY], sbatch=[Result(1, "", stderr)])
    with pytest.raises(SlurmError) as info:
        allocator(login, state, clock).ensure_running()
    assert info.value.command == "sbatch"
    assert info.value.detail == "Batch job submission failed: Invalid partition name specified"
    assert login.commands == ["squeue", "squeue", "sbatch"]
    assert state.job("hpc.debug") is None


def test_sbatch_failure_without_a_message(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[EMPTY], sbatch=[Result(1, "", "")])
    with pytest.raises(SlurmError, match="no error message"):
        allocator(login, state, clock).ensure_running()


def test_squeue_failure(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[Result(1, "", "slurm_load_jobs error: Unable to contact slurm controller\n")])
    with pytest.raises(SlurmError) as info:
        allocator(login, state, clock).ensure_running()
    assert str(info.value) == "squeue failed: slurm_load_jobs error: Unable to contact slurm controller"
    assert login.commands == ["squeue"]


def test_jobs_that_are_not_ours_are_ignored(state: State, clock: FakeClock) -> None:
    theirs = [
        line(job_id="7", state="RUNNING", reason="None", nodes="node9", comment="slurm-proxy:other.debug"),
        line(job_id="8", state="RUNNING", reason="None", nodes="node9", comment="(null)"),
        line(job_id="9", state="RUNNING", reason="None", nodes="node9", comment="my own job"),
        line(job_id="10", state="RUNNING", reason="None", nodes="node9", name="debug"),
        line(job_id="11", state="RUNNING", reason="None", nodes="node9", name="slurm-proxy-gpu"),
        line(job_id="12", state="RUNNING", reason="None", nodes="node9", comment="slurm-proxy:hpc.debug2"),
    ]
    login = FakeLogin(squeue=[out(*theirs), out(*theirs), out(*theirs, PENDING), out(*theirs, RUNNING)],
                      sbatch=[Result(0, "42\n", "")], bash=[KEYS])
    job = allocator(login, state, clock).ensure_running().job
    assert (job.job_id, job.node) == ("42", "node1")
    assert "sbatch" in login.commands


# --- which job the query picks ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("lines", "recorded", "picked"),
    [
        ([line(job_id="50"), line(job_id="42")], None, "42"),  # the oldest
        ([line(job_id="42"), line(job_id="50", state="RUNNING", nodes="n1")], None, "50"),  # running
        ([line(job_id="42", state="RUNNING", nodes="n1"), line(job_id="50")], "50", "42"),  # running
        ([line(job_id="42", state="RUNNING", nodes="n1"), line(job_id="50", state="RUNNING", nodes="n2")],
         "50", "50"),  # recorded
        ([line(job_id="42", state="COMPLETING", nodes="n1"), line(job_id="50")], None, "50"),  # ended
        ([line(job_id="9_1"), line(job_id="10+0")], None, "9_1"),
        ([], None, None),
    ],
)
def test_query_picks(state: State, clock: FakeClock, lines: list[str], recorded: str | None,
                     picked: str | None) -> None:
    if recorded:
        state.record(JobRecord(job_id=recorded, profile="hpc.debug", submitted=1700000000.0, login="hpc"))
    job, _ = allocator(FakeLogin(squeue=[out(*lines)]), state, clock).query()
    assert (job.job_id if job else None) == picked


def test_query_asks_for_all_the_users_jobs_at_once(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[EMPTY])
    allocator(login, state, clock).query()
    assert login.calls == [slurm.squeue_argv()]


def test_an_unreadable_line_of_ours_is_an_error_anything_else_is_skipped(
        state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[Result(0, "squeue: an odd line\n" + line(job_id="7", name="other"), "")])
    assert [j.job_id for j in allocator(login, state, clock).query()[1]] == ["7"]
    login = FakeLogin(squeue=[Result(0, "squeue: invalid option\n", "")])  # no job at all
    with pytest.raises(SlurmOutputError):
        allocator(login, state, clock).query()
    ours = "42|RUNNING|None|node1|slurm-proxy-debug|slurm-proxy:hpc.debug\n"  # fields missing
    login = FakeLogin(squeue=[Result(0, ours, "")])
    with pytest.raises(SlurmOutputError):
        allocator(login, state, clock).query()


# --- progress ---------------------------------------------------------------------------------

def test_report_is_called_on_every_poll_with_the_time_waited(state: State, clock: FakeClock) -> None:
    seen: list[tuple[str, str, float]] = []
    login = FakeLogin(squeue=[out(PENDING), out(PENDING), out(line(reason="Resources")), out(RUNNING)],
                      bash=[KEYS])
    alloc = allocator(login, state, clock, report=lambda job, waited: seen.append(
        (job.job_id, job.reason, waited)))
    alloc.ensure_running()
    assert seen == [("42", "Priority", 0.0), ("42", "Priority", 0.25), ("42", "Resources", 0.75)]


@pytest.mark.parametrize(
    ("job_line", "waited", "text"),
    [
        (PENDING, None, "job 42 pending (Priority)"),
        (line(reason="Resources", start="2026-11-28T14:00:00"), None,
         "job 42 pending (Resources), expected start 2026-11-28T14:00:00"),
        (line(reason="None"), 12.4, "job 42 pending, waited 12 s"),
        (line(state="RUNNING", reason="Prolog", nodes="node1", start="2026-11-28T14:00:00"), None,
         "job 42 running (Prolog)"),
        (line(state="CONFIGURING", reason="None", nodes="node1"), 3.0, "job 42 configuring, waited 3 s"),
    ],
)
def test_progress_line(job_line: str, waited: float | None, text: str) -> None:
    assert progress.progress_line(slurm.parse_squeue_line(job_line), waited) == text


# --- several profiles, one squeue -------------------------------------------------------------

def test_live_jobs_for_several_profiles(state: State) -> None:
    gpu = Profile(name="gpu", cluster=PROFILE.cluster)
    login = FakeLogin(squeue=[out(
        RUNNING,
        line(job_id="50", name="slurm-proxy-gpu", comment="slurm-proxy:hpc.gpu"),
        line(job_id="51", name="slurm-proxy-gpu", comment="slurm-proxy:hpc.debug"),  # name/comment differ
        line(job_id="52", name="slurm-proxy-gpu", comment="slurm-proxy:other.gpu"),  # not asked for
    )])
    jobs = queue.live_jobs(login, [PROFILE, gpu], state)
    assert {k: j.job_id for k, j in jobs.items()} == {"hpc.debug": "42", "hpc.gpu": "50"}
    assert login.calls == [slurm.squeue_argv()]


def test_live_jobs_none(state: State) -> None:
    assert queue.live_jobs(FakeLogin(squeue=[EMPTY]), [PROFILE], state) == {}


def test_a_recorded_job_slurm_no_longer_lists_gives_way_to_one_found_by_name(
        state: State, clock: FakeClock) -> None:
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **NODE1))
    login = FakeLogin(squeue=[out(line(job_id="50", state="RUNNING", nodes="node1"))], bash=[KEYS])
    job = allocator(login, state, clock).ensure_running().job
    assert job.job_id == "50"
    assert login.commands == ["squeue", "bash"]
    assert state.job("hpc.debug").job_id == "50"  # type: ignore[union-attr]


# --- a node shared with the user's other jobs --------------------------------------------------

OTHER = line(job_id="40", state="RUNNING", reason="None", nodes="node[1-2]", name="train", comment="")
SRUN_KEYS = out(f"node1 {ED}")


@pytest.mark.parametrize("other", [OTHER, OTHER.replace("RUNNING", "COMPLETING"),
                                   line(job_id="40", state="RUNNING", reason="None", nodes="node1",
                                        name="slurm-proxy-gpu", comment="slurm-proxy:hpc.gpu")],
                         ids=["users-own-sbatch", "completing", "another-profile"])
def test_a_shared_node_routes_adopt_through_srun_into_the_job(
        state: State, clock: FakeClock, other: str, capsys: pytest.CaptureFixture[str]) -> None:
    login = FakeLogin(squeue=[out(RUNNING, other)], bash=[SRUN_KEYS])
    got = allocator(login, state, clock).ensure_running()
    assert (got.mode, got.neighbours, got.job.job_id) == ("srun", ("40",), "42")
    assert login.calls[1] == jobscript.node_check_argv("srun", "node1", "42")  # the user's host key
    assert state.known_hosts.read_text() == f"slurm-debug {ED}\n"
    said = capsys.readouterr().err
    assert "node1 also runs your job 40: this session goes into job 42 through srun" in said


@pytest.mark.parametrize("other", [OTHER.replace("node[1-2]", "node2"), OTHER.replace("RUNNING", "PENDING"),
                                   OTHER.replace("RUNNING", "COMPLETED")],
                         ids=["other-node", "pending", "ended"])
def test_an_unshared_node_keeps_the_direct_path(state: State, clock: FakeClock, other: str) -> None:
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **NODE1))
    login = FakeLogin(squeue=[out(RUNNING, other)])
    got = allocator(login, state, clock).ensure_running()
    assert (got.mode, got.neighbours) == ("adopt", ())
    assert login.calls == [SQUEUE]


@pytest.mark.parametrize("mode", ["sshd", "srun"])
def test_modes_that_own_the_sshd_need_no_routing(state: State, clock: FakeClock, mode: str) -> None:
    login = FakeLogin(squeue=[out(RUNNING, OTHER)], bash=[out("#port 20345", f"node1 {ED}")])
    got = allocator(login, state, clock, PROFILE._replace(mode=mode)).ensure_running()
    assert got.mode == mode and got.neighbours == ("40",)


def test_records_of_jobs_slurm_no_longer_lists_are_forgotten(state: State, clock: FakeClock) -> None:
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **NODE1))
    state.record(JobRecord("30", "hpc.gpu", 1700000000.0, alias="slurm-gpu", node="node2",
                           host_keys=(ED,), login="hpc"))
    state.record(JobRecord("31", "other.gpu", 1700000000.0, alias="slurm-x", login="elsewhere"))
    state.record(JobRecord("32", "hpc.new", time.time(), login="hpc"))  # just submitted elsewhere
    allocator(FakeLogin(squeue=[out(RUNNING)]), state, clock).ensure_running()
    assert set(State(state.dir).jobs()) == {"hpc.debug", "other.gpu", "hpc.new"}
    assert "slurm-gpu" not in state.known_hosts.read_text()


def test_a_record_made_for_another_login_is_not_this_clusters(state: State, clock: FakeClock) -> None:
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **{**NODE1, "login": "other-login"}))
    login = FakeLogin(squeue=[out(RUNNING)], bash=[KEYS])
    allocator(login, state, clock).ensure_running()
    assert login.commands == ["squeue", "bash"]  # its node is checked afresh
    assert state.job("hpc.debug").login == "hpc"  # type: ignore[union-attr]


def test_trusted_by_vouches_only_for_the_configs_own_profiles() -> None:
    cfg = Config(Path("c.toml"), "slurm-", {"hpc": PROFILE.cluster}, {"debug": PROFILE})
    trust = manage.trusted_by(cfg)
    rec = JobRecord("42", "hpc.debug", 0.0, **NODE1)
    assert trust("hpc.debug", rec)
    assert not trust("otp.debug", rec._replace(profile="otp.debug"))
    assert not trust("hpc.debug", rec._replace(login="otp"))
    assert not trust("hpc.debug", rec._replace(alias="x-debug"))


def test_a_login_per_query_polls_at_the_slow_pace_from_the_start(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[out(PENDING)] * 4 + [out(RUNNING)], bash=[KEYS])
    login.logs_in_per_command = True  # OpenSSH for Windows
    state.record(JobRecord("42", "hpc.debug", 1700000000.0, **NODE1))
    allocator(login, state, clock).ensure_running()
    assert clock.sleeps == [5.0] * 4


RENEW = PROFILE._replace(renew_before=600, warn_before=300)


def test_renew_before_submits_one_successor_and_routes_this_session_past_it(
        state: State, clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
    soon = line(state="RUNNING", reason="None", nodes="node1").replace("|1:00:00|", "|4:00|")
    login = FakeLogin(squeue=[out(soon)], sbatch=[Result(0, "43\n", "")], bash=[SRUN_KEYS])
    got = allocator(login, state, clock, RENEW).ensure_running()
    assert login.commands == ["squeue", "squeue", "sbatch", "bash"]
    assert (got.mode, got.neighbours) == ("srun", ("43",))  # the successor may start right here
    said = capsys.readouterr().err
    assert "job 42 ends in 4 min (its time limit)" in said and "43 for profile debug to follow" in said
    assert state.job("hpc.debug+next").job_id == "43"  # type: ignore[union-attr]
    again = FakeLogin(squeue=[out(soon, PENDING.replace("42|", "43|", 1))], bash=[KEYS])
    allocator(again, state, clock, RENEW).ensure_running()
    assert "sbatch" not in again.commands  # never two successors


def test_renew_before_0_never_submits_a_successor_even_at_0_00_left(state: State, clock: FakeClock) -> None:
    """Past its limit, before Slurm kills it, a job shows 0:00 left: ``renew_before = 0`` is never."""
    over = line(state="RUNNING", reason="None", nodes="node1").replace("|1:00:00|", "|0:00|")
    login = FakeLogin(squeue=[out(over)], bash=[KEYS])
    got = allocator(login, state, clock, PROFILE._replace(renew_before=0)).ensure_running()
    assert login.commands == ["squeue", "bash"]
    assert (got.job.job_id, got.job.time_left, got.neighbours) == ("42", 0, ())


def test_a_connect_has_nothing_to_say_until_the_warning_or_the_renewal_is_due() -> None:
    """What a warm memo's expiry is (warm.py): the earlier of warn_before and renew_before."""
    job = slurm.parse_squeue(line(state="RUNNING", reason="None", nodes="node1") + "\n")[0]
    assert job.time_left == 3600
    assert renewal.quiet_until(RENEW, job, 1000.0) == 1000.0 + 3600 - 600
    assert renewal.quiet_until(RENEW._replace(renew_before=0), job, 1000.0) == 1000.0 + 3600 - 300
    assert renewal.quiet_until(PROFILE, job._replace(time_left=None), 1000.0) == float("inf")


@pytest.mark.parametrize(("said", "told"), [("timelimit", True), ("", False)])
def test_a_job_past_its_end_is_said_to_have_reached_its_limit_only_if_it_did(
        state: State, clock: FakeClock, capsys: pytest.CaptureFixture[str], said: str, told: bool) -> None:
    state.record(JobRecord("41", "hpc.debug", 1700000000.0, **NODE1, ends=1700000100.0))
    login = FakeLogin(squeue=[EMPTY, EMPTY, out(RUNNING)], sh=[out(said)], sbatch=[Result(0, "42\n", "")],
                      bash=[KEYS])
    allocator(login, state, clock).ensure_running()
    message = "job 41 reached its time limit; submitting a new job for debug"
    assert (message in capsys.readouterr().err) == told


# --- a login node that refuses TCP forwarding ----------------------------------------------------

def test_a_login_node_that_refuses_forwarding_sends_sessions_through_srun_and_that_is_kept(
        state: State, clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
    login = FakeLogin(squeue=[out(RUNNING)], bash=[KEYS, SRUN_KEYS])
    login.refuses_forwarding = "Stdio forwarding request failed: Session open refused by peer"
    got = allocator(login, state, clock).ensure_running()
    assert (got.mode, login.probes) == ("srun", ["node1:22"])
    assert "testlogin refuses TCP forwarding" not in capsys.readouterr().err  # its name is hpc
    assert state.job("hpc.debug").mode == "srun"  # type: ignore[union-attr]
    # The next connect knows: no probe, no node check, straight to srun.
    again = FakeLogin(squeue=[out(RUNNING)])
    assert allocator(again, state, clock).ensure_running().mode == "srun"
    assert again.commands == ["squeue"] and again.probes == []


def test_a_login_node_that_forwards_is_tried_once_per_job(state: State, clock: FakeClock) -> None:
    login = FakeLogin(squeue=[out(RUNNING)], bash=[KEYS])
    assert allocator(login, state, clock).ensure_running().mode == "adopt"
    assert login.probes == ["node1:22"]
    warm = FakeLogin(squeue=[out(RUNNING)])
    assert allocator(warm, state, clock).ensure_running().mode == "adopt" and warm.probes == []
