"""slurm.py: readers for what squeue/sbatch print, and the argv lists sent to them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slurm_proxy import slurm
from slurm_proxy.errors import SlurmOutputError
from slurm_proxy.slurm import Job


def squeue_line(job_id: str = "123", name: str = "slurm-proxy-debug", state: str = "RUNNING",
                reason: str = "None", nodes: str = "node1", start: str = "2026-11-28T13:41:07",
                left: str = "59:58", comment: str = "slurm-proxy:test.debug") -> str:
    """One line as ``squeue --format=SQUEUE_FORMAT`` prints it."""
    return "|".join([job_id, state, reason, nodes, start, left, name, comment])


def make_job(**kw: Any) -> Job:
    values: dict[str, Any] = dict(
        job_id="123", name="slurm-proxy-debug", state="RUNNING", reason="", nodes=("node1",),
        start="2026-11-28T13:41:07", time_left=3598, comment="slurm-proxy:test.debug",
    )
    values.update(kw)
    return Job(**values)


# --- squeue -----------------------------------------------------------------------------------

def test_squeue_format_is_the_eight_fields_in_order() -> None:
    assert slurm.SQUEUE_FORMAT == "%i|%T|%r|%N|%S|%L|%j|%k"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "123|RUNNING|None|node1|2026-11-28T13:41:07|59:58|slurm-proxy-debug|slurm-proxy:test.debug",
            make_job(),
            id="running-ready",
        ),
        pytest.param(
            "124|PENDING|Resources||N/A|1:00:00|slurm-proxy-gpu|slurm-proxy:hpc.gpu",
            make_job(job_id="124", name="slurm-proxy-gpu", state="PENDING", reason="Resources",
                     nodes=(), start="", time_left=3600, comment="slurm-proxy:hpc.gpu"),
            id="pending-resources-no-start",
        ),
        pytest.param(
            "125|PENDING|Priority||2026-11-29T08:00:00|8:00:00|slurm-proxy-gpu|slurm-proxy:hpc.gpu",
            make_job(job_id="125", name="slurm-proxy-gpu", state="PENDING", reason="Priority",
                     nodes=(), start="2026-11-29T08:00:00", time_left=28800,
                     comment="slurm-proxy:hpc.gpu"),
            id="pending-priority-with-start",
        ),
        pytest.param(
            "126|RUNNING|Prolog|gpu07|2026-11-28T13:41:07|1-00:00:00|slurm-proxy-debug|slurm-proxy:t.d",
            make_job(job_id="126", reason="Prolog", nodes=("gpu07",), time_left=86400,
                     comment="slurm-proxy:t.d"),
            id="running-in-prolog",
        ),
        pytest.param(
            "123_4|RUNNING|None|node1|2026-11-28T13:41:07|59:58|slurm-proxy-debug|slurm-proxy:test.debug",
            make_job(job_id="123_4"),
            id="array-task",
        ),
        pytest.param(
            "123+0|RUNNING|None|node1|2026-11-28T13:41:07|59:58|slurm-proxy-debug|slurm-proxy:test.debug",
            make_job(job_id="123+0"),
            id="heterogeneous-component",
        ),
        pytest.param(
            "127|RUNNING|None|node[1-2]|2026-11-28T13:41:07|UNLIMITED|interactive|(null)",
            make_job(job_id="127", name="interactive", nodes=("node1", "node2"), time_left=None,
                     comment=""),
            id="null-comment-unlimited-multinode",
        ),
        pytest.param(
            "128|PENDING|(null)|(null)|Unknown|INVALID|slurm-proxy-debug|slurm-proxy:a|b|c",
            make_job(job_id="128", state="PENDING", nodes=(), start="", time_left=None,
                     comment="slurm-proxy:a|b|c"),
            id="nulls-and-pipes-in-comment",
        ),
        pytest.param(
            "  129|COMPLETING|None|node1|2026-11-28T13:41:07|0:00|slurm-proxy-debug|  \n",
            make_job(job_id="129", state="COMPLETING", time_left=0, comment=""),
            id="padding-completing-empty-comment",
        ),
    ],
)
def test_parse_squeue_line(line: str, expected: Job) -> None:
    assert slurm.parse_squeue_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("", id="empty"),
        pytest.param("123|RUNNING|None", id="truncated"),
        pytest.param("123|RUNNING|None|node1|2026-11-28T13:41:07|59:58|slurm-proxy-debug",
                     id="seven-fields"),
        pytest.param("JOBID|STATE|REASON|NODELIST|START_TIME|TIME_LEFT|NAME|COMMENT", id="header"),
        pytest.param(squeue_line(job_id="abc"), id="letters-id"),
        pytest.param(squeue_line(job_id=""), id="empty-id"),
        pytest.param(squeue_line(job_id="-1"), id="negative-id"),
        pytest.param(squeue_line(job_id="123_"), id="dangling-array"),
        pytest.param(squeue_line(job_id="1 2"), id="space-in-id"),
        pytest.param(squeue_line(job_id="12;rm"), id="shell-in-id"),
        pytest.param(squeue_line(state="running"), id="lowercase-state"),
        pytest.param(squeue_line(state=""), id="empty-state"),
        pytest.param(squeue_line(left="soon"), id="bad-time-left"),
        pytest.param(squeue_line(nodes="n[1-"), id="bad-nodelist"),
    ],
)
def test_parse_squeue_line_refuses(line: str) -> None:
    with pytest.raises(SlurmOutputError):
        slurm.parse_squeue_line(line)


def test_a_state_slurm_proxy_does_not_know_is_neither_running_nor_ended() -> None:
    job = slurm.parse_squeue_line(squeue_line(state="EXPEDITING"))
    assert (job.state, job.ready, job.ended) == ("EXPEDITING", False, False)


@pytest.mark.parametrize(
    ("line", "job_id"),
    [
        # Real lines of Slurm 22.05's squeue with our --format: a held pending array, a running
        # array task, the components of a heterogeneous job, a job in a state from a newer Slurm.
        ("191_[1-4%1]|PENDING|JobHeldUser||N/A|1:00:00|arr|(null)", "191_[1-4%1]"),
        ("191_[2,4-5:2]|PENDING|JobArrayTaskLimit||N/A|1:00:00|arr|(null)", "191_[2,4-5:2]"),
        ("191_1|RUNNING|None|node2|2026-12-06T03:10:00|59:00|arr|(null)", "191_1"),
        ("200+0|RUNNING|None|node1|2026-12-06T03:10:00|59:00|het|(null)", "200+0"),
        ("200+1|RUNNING|None|node2|2026-12-06T03:10:00|59:00|het|(null)", "200+1"),
        ("201|EXPEDITING|None||N/A|1:00:00|new|(null)", "201"),
    ],
)
def test_the_users_other_jobs_are_read(line: str, job_id: str) -> None:
    assert [j.job_id for j in slurm.parse_squeue(line + "\n")] == [job_id]


def test_a_line_that_is_not_ours_and_cannot_be_read_is_skipped_one_of_ours_is_an_error() -> None:
    ours = squeue_line(job_id="42")
    odd = ["Welcome to the cluster", "7|RUNNING|None|n[1-|N/A|1:00|other|(null)", "8|R|x"]
    skipped: list[str] = []
    assert [j.job_id for j in slurm.parse_squeue("\n".join([*odd, ours]), skipped)] == ["42"]
    assert skipped == odd
    with pytest.raises(SlurmOutputError):
        slurm.parse_squeue(squeue_line(job_id="42", left="soon"))
    with pytest.raises(SlurmOutputError):  # too few fields, but our name and comment show
        slurm.parse_squeue("42|RUNNING|slurm-proxy-debug|slurm-proxy:test.debug")


@pytest.mark.parametrize("name", [
    "SQUEUE_STATES", "SQUEUE_FORMAT", "SQUEUE_SORT", "SLURM_TIME_FORMAT", "SBATCH_CLUSTERS", "SLURM_CLUSTERS",
    "SBATCH_PARTITION", "SRUN_CPUS_PER_TASK", "SCANCEL_INTERACTIVE"])
def test_slurm_commands_run_without_the_users_slurm_variables_but_slurm_conf(name: str) -> None:
    import os
    import subprocess

    env = {**os.environ, name: "x", "SLURM_CONF": "/site/slurm.conf", "SLURMISH": "kept"}
    shown = slurm.neutral(["sh", "-c", f'echo "${{{name}-unset}} $SLURM_CONF $SLURMISH"'])
    out = subprocess.run(shown, env=env, capture_output=True, text=True, check=True).stdout
    assert out == "unset /site/slurm.conf kept\n"


@pytest.mark.parametrize("sh", [["dash"], ["bash", "--posix"], ["busybox", "sh"]],
                         ids=["dash", "bash", "busybox"])
def test_a_value_that_looks_like_a_slurm_variable_unsets_nothing_else_breaks_nothing(sh: list[str]) -> None:
    import os
    import shutil
    import subprocess

    if not shutil.which(sh[0]):  # /bin/sh on Debian, RHEL and Alpine login nodes
        pytest.skip(f"no {sh[0]} here")
    env = {**os.environ, "SQUEUE_STATES": "a b\nSLURM_X=1 *", "SLURM_CONF": "/site/slurm.conf",
           "NOTE": "x SLURM_a-b=1 SLURM_CONF=/x 'SQUEUE_Y=2"}
    shown = slurm.neutral(["sh", "-c", 'echo "${SQUEUE_STATES-unset} $SLURM_CONF $NOTE"'])
    out = subprocess.run([*sh, *shown[1:]], env=env, capture_output=True, text=True, check=True).stdout
    assert out == f"unset /site/slurm.conf {env['NOTE']}\n"


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        # A site's job_submit plugin (slurm.log_user) speaks first, then sbatch's own words.
        ("sbatch: error: jobs must name an account: add --account=<yours>\n"
         "sbatch: error: Batch job submission failed: Unspecified error\n",
         "jobs must name an account: add --account=<yours>; Batch job submission failed: Unspecified error"),
        ("Welcome\nsbatch: error: Batch job submission failed: Invalid qos specification\n",
         "Batch job submission failed: Invalid qos specification"),
        ("something else\n", ""),
    ],
)
def test_refusal(stderr: str, line: str) -> None:
    assert slurm.refusal(stderr) == line


def test_parse_squeue_skips_blank_lines() -> None:
    out = f"\n{squeue_line(job_id='1')}\n   \n{squeue_line(job_id='2', state='PENDING')}\n"
    assert [j.job_id for j in slurm.parse_squeue(out)] == ["1", "2"]
    assert slurm.parse_squeue("") == []


@pytest.mark.parametrize(
    ("state", "reason", "nodes", "ready"),
    [
        ("RUNNING", "", ("node1",), True),
        ("RUNNING", "Prolog", ("node1",), False),
        ("RUNNING", "NodeBoot", ("node1",), False),
        ("RUNNING", "", (), False),
        ("PENDING", "Resources", (), False),
        ("PENDING", "", ("node1",), False),
        ("CONFIGURING", "", ("node1",), False),
        ("COMPLETING", "", ("node1",), False),
        ("SUSPENDED", "", ("node1",), False),
    ],
)
def test_job_ready(state: str, reason: str, nodes: tuple[str, ...], ready: bool) -> None:
    assert make_job(state=state, reason=reason, nodes=nodes).ready is ready


@pytest.mark.parametrize(
    ("state", "ended"),
    [("RUNNING", False), ("PENDING", False), ("REQUEUED", False), ("COMPLETING", True),
     ("COMPLETED", True), ("CANCELLED", True), ("FAILED", True), ("TIMEOUT", True),
     ("NODE_FAIL", True), ("OUT_OF_MEMORY", True), ("PREEMPTED", True)],
)
def test_job_ended(state: str, ended: bool) -> None:
    assert make_job(state=state).ended is ended


def test_active_and_ended_states_are_disjoint() -> None:
    assert not slurm.ACTIVE_STATES & slurm.ENDED_STATES


def test_job_node_is_first_node_or_empty() -> None:
    assert make_job(nodes=("gpu01", "gpu02")).node == "gpu01"
    assert make_job(nodes=()).node == ""


# --- hostlists --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node1", ["node1"]),
        ("", []),
        ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
        ("n[001-003],login1", ["n001", "n002", "n003", "login1"]),
        ("a[1-2]-ib[3-4]", ["a1-ib3", "a1-ib4", "a2-ib3", "a2-ib4"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("n[5]", ["n5"]),
        ("rack[1-2]x", ["rack1x", "rack2x"]),
        ("node1,node2", ["node1", "node2"]),
        ("cn-1.cluster,cn_2", ["cn-1.cluster", "cn_2"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert slurm.expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize(
    "hostlist",
    ["n[1-", "n[3-1]", "n]", "n[]", "n[a-b]", "n[1-2-3]", "n[1-x]", "n[-2]", "n[1-2]]",
     "n[[1]]", "a b", "node1;rm", "n[1-2];x", "n[0-200000]", "$(id)"],
)
def test_expand_hostlist_refuses(hostlist: str) -> None:
    with pytest.raises(SlurmOutputError):
        slurm.expand_hostlist(hostlist)


@pytest.mark.parametrize("hostlist", ["bad host[1-2]", "n;x[1]", "$(id)[1]"])
def test_expand_hostlist_checks_the_prefix_too(hostlist: str) -> None:
    with pytest.raises(SlurmOutputError):
        slurm.expand_hostlist(hostlist)


def test_expand_hostlist_non_ascii_digit_is_a_slurm_output_error() -> None:
    with pytest.raises(SlurmOutputError):
        slurm.expand_hostlist("n[²]")


# --- durations --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("59:58", 3598),  # minutes:seconds
        ("0:00", 0),
        ("1:00:00", 3600),
        ("8:00:00", 28800),
        ("1-02:03:04", 93784),
        ("1-02", 93600),  # days-hours
        ("1-02:03", 93780),  # days-hours:minutes
        ("5", 300),  # bare minutes
        ("30", 1800),
        (" 10:00 ", 600),
        ("UNLIMITED", None),
        ("INVALID", None),
        ("NOT_SET", None),
        ("N/A", None),
        ("INFINITE", None),
        ("unlimited", None),
        ("", None),
    ],
)
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert slurm.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "1:2:3:4", "-5", "1-", "1.5", "1h", "::", "1-2-3", "5 min"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(SlurmOutputError):
        slurm.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "unlimited"), (0, "0:00:00"), (59, "0:00:59"), (3598, "0:59:58"), (3600, "1:00:00"),
     (86399, "23:59:59"), (86400, "1-00:00:00"), (93784, "1-02:03:04"), (10 * 86400, "10-00:00:00")],
)
def test_format_duration(seconds: int | None, text: str) -> None:
    assert slurm.format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=400 * 86400))
def test_format_then_parse_duration_round_trips(seconds: int) -> None:
    assert slurm.parse_duration(slurm.format_duration(seconds)) == seconds


# --- sbatch / scancel -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("output", "job_id"),
    [("42", "42"), ("42\n", "42"), (" 42 ", "42"), ("42;cluster", "42"), ("42;hpc\n", "42"),
     ("sbatch: warning: something odd\n42\n", "42")],
)
def test_parse_sbatch(output: str, job_id: str) -> None:
    assert slurm.parse_sbatch(output) == job_id


@pytest.mark.parametrize(
    "output", ["", "\n", "Submitted batch job 42", "abc", ";cluster", "4 2", "42\nwarning", "-1"],
)
def test_parse_sbatch_refuses(output: str) -> None:
    with pytest.raises(SlurmOutputError):
        slurm.parse_sbatch(output)


def test_sbatch_argv_shape() -> None:
    argv = slurm.sbatch_argv(["--nodes=1", "--partition=gpu"], "slurm-proxy-gpu", "slurm-proxy:hpc.gpu")
    assert argv == slurm.neutral([
        "sbatch", "--parsable", "--job-name=slurm-proxy-gpu", "--comment=slurm-proxy:hpc.gpu",
        "--output=/dev/null", "--error=/dev/null", "--nodes=1", "--partition=gpu",
    ])


def test_sbatch_argv_takes_the_script_from_stdin() -> None:
    # No positional script argument: every word is an option.
    argv = slurm.sbatch_argv([], "slurm-proxy-x")
    assert argv[len(slurm.neutral([]))] == "sbatch"
    assert all(w.startswith("--") for w in argv[len(slurm.neutral([])) + 1:])
    assert "--comment=slurm-proxy" in slurm.sbatch_argv([], "slurm-proxy-x")


def test_job_name() -> None:
    assert slurm.job_name("gpu2") == "slurm-proxy-gpu2"


def test_job_comment() -> None:
    assert slurm.job_comment("hpc.gpu2") == "slurm-proxy:hpc.gpu2"


@pytest.mark.parametrize(("job_id", "number"), [("123", 123), ("123_4", 123), ("123+0", 123),
                                                ("7_10+1", 7), ("0042", 42)])
def test_job_number(job_id: str, number: int) -> None:
    assert slurm.job_number(make_job(job_id=job_id)) == number


def test_squeue_argv_asks_for_all_the_users_jobs() -> None:
    assert slurm.squeue_argv() == slurm.neutral(["squeue", "--me", "--local", "--all", "--noheader",
                                                 "--format=%i|%T|%r|%N|%S|%L|%j|%k"])


def test_scancel_argv() -> None:
    assert slurm.scancel_argv(["42", "43"]) == slurm.neutral(["scancel", "42", "43"])


def test_error_message_names_the_command_and_output() -> None:
    with pytest.raises(SlurmOutputError) as info:
        slurm.parse_sbatch("Submitted batch job 42")
    assert info.value.command == "sbatch"
    assert re.search(r"cannot read sbatch output \(no job id\)", str(info.value))


def test_a_pipe_in_another_jobs_name_cannot_make_it_look_like_ours() -> None:
    job = slurm.parse_squeue_line("77|RUNNING|None|node1|N/A|1:00|slurm-proxy-debug|x|slurm-proxy:test.debug")
    assert (job.job_id, job.nodes, job.name) == ("77", ("node1",), "slurm-proxy-debug")
    assert job.comment == "x|slurm-proxy:test.debug"  # not slurm-proxy's comment: never ours
