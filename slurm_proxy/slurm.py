"""Slurm's side, as pure functions: command lines to run, and readers for what they print.

Nothing here runs anything; ``queue.py`` and ``node_trust.py`` send these argv lists through a ``Login``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import SlurmOutputError

JOB_NAME_PREFIX = "slurm-proxy-"
COMMENT = "slurm-proxy"

# squeue fields, "|"-separated. The job's name and comment are free text (another job of the
# user's may have a "|" in its name), so they come last and the fixed fields are read from the
# left; slurm-proxy's own names and comments never hold a "|".
_SQUEUE_FIELDS = ("%i", "%T", "%r", "%N", "%S", "%L", "%j", "%k")
SQUEUE_FORMAT = "|".join(_SQUEUE_FIELDS)

ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
     "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}
)
ENDED_STATES = frozenset(
    {"COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
     "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "STOPPED", "REVOKED"}
)
# States in which a job holds its node: pam_slurm_adopt counts it among the user's jobs there.
HOLDING_STATES = frozenset({"RUNNING", "SUSPENDED", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"})
# Reasons under which a RUNNING job's node is not usable yet.
_NOT_READY_REASONS = frozenset({"Prolog", "NodeBoot"})


class Job(NamedTuple):
    job_id: str
    name: str
    state: str
    reason: str
    nodes: tuple[str, ...]
    start: str  # ISO time Slurm expects (or started) the job to start, or "" if unknown
    time_left: int | None  # seconds; None for unlimited or unknown
    comment: str

    @property
    def ready(self) -> bool:
        """Running, on a node, with its prolog done: a session can land there now."""
        return self.state == "RUNNING" and bool(self.nodes) and self.reason not in _NOT_READY_REASONS

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def node(self) -> str:
        return self.nodes[0] if self.nodes else ""


def job_name(profile: str) -> str:
    return JOB_NAME_PREFIX + profile


def job_comment(profile_key: str) -> str:
    return f"{COMMENT}:{profile_key}"


def job_number(job: Job) -> int:
    """The leading number of a job id (``123``, ``123_4``, ``123+0``), for ordering."""
    return int(job.job_id.split("_")[0].split("+")[0])


# Slurm's commands read these from the environment, and a user's rc file may set them
# (SQUEUE_STATES=RUNNING hides pending jobs, SLURM_TIME_FORMAT changes times, SBATCH_* adds
# options): each command runs without them, but for SLURM_CONF, which says where Slurm is. The
# shell's builtins find them (no env or sed to start): a word of ``export -p`` that looks like one
# is unset, even a piece of another's value (that unsets nothing or only what goes anyway), once
# a subshell has shown it is a name.
_CLEAN_ENV = (
    "set -f; for __sp_w in $(export -p); do case $__sp_w in SLURM_CONF=*) ;; "
    "SLURM_*=*|SQUEUE_*=*|SBATCH_*=*|SRUN_*=*|SALLOC_*=*|SCANCEL_*=*|SINFO_*=*|SCONTROL_*=*|SACCT_*=*) "
    '__sp_v=${__sp_w%%=*}; (unset "$__sp_v") 2>/dev/null && unset "$__sp_v" ;; esac; done; exec "$@"'
)


def neutral(argv: list[str]) -> list[str]:
    """``argv`` (a Slurm command) run without the user's Slurm input variables."""
    return ["sh", "-c", _CLEAN_ENV, "sh", *argv]


def squeue_argv() -> list[str]:
    """One squeue for all the user's jobs: slurm-proxy's own (found by id, or by name and
    comment) and the others that may share a node with them.

    Two slurmctld RPCs (the user's jobs, and the partitions squeue always loads); ``--local``
    spares a federation lookup, ``--all`` shows jobs in hidden partitions too."""
    return neutral(["squeue", "--me", "--local", "--all", "--noheader", f"--format={SQUEUE_FORMAT}"])


def parse_squeue(output: str, skipped: list[str] | None = None) -> list[Job]:
    """The jobs of an squeue. A line that cannot be read is an error when it is one of
    slurm-proxy's jobs, and is skipped (appended to ``skipped``) when it is not: the user's
    other jobs (arrays, heterogeneous jobs, a state this version does not know) never stop us.
    Output in which not one line is a job is an error too: that is no listing of jobs."""
    jobs, unread = [], []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            jobs.append(parse_squeue_line(line))
        except SlurmOutputError as e:
            if _looks_ours(line):
                raise
            unread.append(e)
            if skipped is not None:
                skipped.append(line)
    if unread and not jobs:  # not one line is a job: this is no listing of jobs
        raise unread[0]
    return jobs


def parse_squeue_line(line: str) -> Job:
    parts = line.rstrip("\n").split("|", len(_SQUEUE_FIELDS) - 1)
    if len(parts) != len(_SQUEUE_FIELDS):
        raise SlurmOutputError("squeue", line, f"expected {len(_SQUEUE_FIELDS)} fields")
    job_id, state, reason, nodes, start, left, name, comment = (p.strip() for p in parts)
    try:
        time_left = parse_duration(left)
    except SlurmOutputError:
        raise SlurmOutputError("squeue", line, f"bad time left {left!r}") from None
    return _job("squeue", line, job_id, name, state, reason, nodes, start, time_left, comment)


def _looks_ours(line: str) -> bool:
    return f"|{JOB_NAME_PREFIX}" in line and f"|{COMMENT}:" in line


# A job's id as squeue shows it: 123, an array's task 123_4 or its pending rest 123_[5-9%2],
# a heterogeneous job's component 123+0.
_JOB_ID = re.compile(r"\d+(_\d+|_\[[0-9,\-%:]+\])?(\+\d+)?")


def _job(command: str, line: str, job_id: str, name: str, state: str, reason: str, nodes: str,
         start: str, time_left: int | None, comment: str) -> Job:
    if not _JOB_ID.fullmatch(job_id):
        raise SlurmOutputError(command, line, "bad job id")
    if not re.fullmatch(r"[A-Z_]+", state):
        raise SlurmOutputError(command, line, "bad job state")
    # A state this version of slurm-proxy does not know is neither running nor ended: waited on.
    return Job(
        job_id=job_id,
        name=name,
        state=state,
        reason="" if reason in ("None", "(null)") else reason,
        nodes=tuple(expand_hostlist(nodes)) if nodes and nodes != "(null)" else (),
        start="" if start in ("N/A", "(null)", "Unknown", "None") else start,
        time_left=time_left,
        comment="" if comment == "(null)" else comment,
    )


def expand_hostlist(hostlist: str) -> list[str]:
    """``gpu[01-03,07],login1`` → ``['gpu01', 'gpu02', 'gpu03', 'gpu07', 'login1']``."""
    hosts: list[str] = []
    for item in _split_top_level(hostlist):
        hosts.extend(_expand_one(item, hostlist))
    return hosts


def _split_top_level(hostlist: str) -> list[str]:
    items, depth, current = [], 0, ""
    for ch in hostlist:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SlurmOutputError("hostlist", hostlist, "unbalanced ]")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise SlurmOutputError("hostlist", hostlist, "unbalanced [")
    items.append(current)
    return [i for i in items if i]


def _expand_one(item: str, whole: str) -> list[str]:
    m = re.fullmatch(r"([A-Za-z0-9._-]*)\[([^\[\]]*)\](.*)", item)
    if not m:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", item):
            raise SlurmOutputError("hostlist", whole, f"bad host name {item!r}")
        return [item]
    prefix, ranges, rest = m.groups()
    tails = _expand_one(rest, whole) if rest else [""]
    out: list[str] = []
    for r in ranges.split(","):
        lo, sep, hi = r.partition("-")
        if not re.fullmatch(r"[0-9]+", lo) or (sep and not re.fullmatch(r"[0-9]+", hi)):
            raise SlurmOutputError("hostlist", whole, f"bad range {r!r}")
        start, stop = int(lo), int(hi) if sep else int(lo)
        if stop < start or stop - start > 100_000:
            raise SlurmOutputError("hostlist", whole, f"bad range {r!r}")
        for n in range(start, stop + 1):
            out.extend(f"{prefix}{n:0{len(lo)}d}{tail}" for tail in tails)
    return out


def parse_duration(text: str) -> int | None:
    """Slurm's ``[days-]hours:minutes:seconds`` (and shorter forms) in seconds.

    ``UNLIMITED``, ``INVALID``, ``NOT_SET`` and ``N/A`` mean no known limit: None.
    """
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INVALID", "NOT_SET", "N/A", "INFINITE", ""):
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise SlurmOutputError("time", text, "not a Slurm time")
    days, a, b, c = m.groups()
    if days is not None:
        # days-hours[:minutes[:seconds]]
        h, mi, s = int(a), int(b or 0), int(c or 0)
        return ((int(days) * 24 + h) * 60 + mi) * 60 + s
    if c is not None:
        return (int(a) * 60 + int(b)) * 60 + int(c)
    if b is not None:
        return int(a) * 60 + int(b)  # minutes:seconds
    return int(a) * 60  # minutes


def format_duration(seconds: int | None) -> str:
    if seconds is None:
        return "unlimited"
    days, rem = divmod(int(seconds), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h:d}:{m:02d}:{s:02d}"


def sbatch_argv(options: list[str], name: str, comment: str = COMMENT) -> list[str]:
    """sbatch reading its script from stdin; ``options`` come from the validated profile."""
    return neutral(["sbatch", "--parsable", f"--job-name={name}", f"--comment={comment}",
                    "--output=/dev/null", "--error=/dev/null", *options])


def parse_sbatch(output: str) -> str:
    """``--parsable`` prints ``jobid[;cluster]``."""
    line = output.strip().splitlines()[-1] if output.strip() else ""
    job_id = line.split(";", 1)[0]
    if not re.fullmatch(r"[0-9]+", job_id):
        raise SlurmOutputError("sbatch", output, "no job id")
    return job_id


def refusal(stderr: str) -> str:
    """Why sbatch refused a job, on one line: its ``error:`` lines, a site's own message (from
    its job_submit plugin) first; "" when it printed none."""
    said = [line.split(" error: ", 1)[1].strip() for line in stderr.splitlines() if " error: " in line]
    return "; ".join(s for s in said if s)


def scancel_argv(job_ids: list[str]) -> list[str]:
    return neutral(["scancel", *job_ids])
