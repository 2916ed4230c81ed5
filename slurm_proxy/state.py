"""The local record of jobs slurm-proxy submitted, the node each alias resolved to and that
node's host keys.

One JSON file, 0600, replaced atomically. A corrupt file is set aside and rebuilt; a file that is
a symlink or belongs to someone else is refused, never followed. Beside it, ``known_hosts`` holds
``<alias> <key>`` lines for ssh (the Host block names it as ``UserKnownHostsFile``), made from the
records whenever they change: an alias trusts exactly the keys its current record holds, and only
records the config in use vouches for (``trust``) count, so neither an ended job nor another
config's cluster leaves a key behind.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from . import log, paths

VERSION = 1


class JobRecord(NamedTuple):
    job_id: str
    profile: str  # Profile.key: "<cluster>.<profile>"
    submitted: float
    alias: str = ""
    node: str = ""
    host_keys: tuple[str, ...] = ()  # "<type> <base64>" the login node trusts for node
    port: int = 0  # the job's own sshd (mode sshd); 0 = the node's sshd
    mode: str = ""  # the mode the node was checked for: its host keys depend on it
    login: str = ""  # the cluster's login destination: a record counts only for that cluster
    ends: float = 0.0  # when the job reaches its time limit (epoch seconds); 0 = unknown


Trust = Callable[[str, JobRecord], bool]  # (profile key, record) → may its keys be trusted?


def _trust_any(key: str, rec: JobRecord) -> bool:
    return True


class State:
    def __init__(self, directory: Path, trust: Trust = _trust_any) -> None:
        self.dir = directory
        self.path = directory / "state.json"
        self.known_hosts = directory / "known_hosts"
        self.trust = trust
        self._data: dict[str, Any] | None = None  # as last read or written by this process

    # -- reading ---------------------------------------------------------------------------
    def jobs(self) -> dict[str, JobRecord]:
        """Profile key → the job we submitted for it (the file is read once per process)."""
        return _records(self._cached())

    def _cached(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._read()
        return self._data

    def job(self, profile_key: str) -> JobRecord | None:
        return self.jobs().get(profile_key)

    def _read(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise paths.UnsafePath(self.path, f"cannot open safely ({e.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (os.name != "nt" and st.st_uid != os.getuid()):
            os.close(fd)
            raise paths.UnsafePath(self.path, "not a regular file owned by you")
        with os.fdopen(fd, "rb") as f:
            try:
                data = f.read()
            except OSError as e:
                raise paths.UnsafePath(self.path, f"cannot read ({e.strerror})") from None
        try:
            parsed = json.loads(data)
            if not isinstance(parsed, dict) or parsed.get("version") != VERSION:
                raise ValueError("unexpected layout")
            return parsed
        except ValueError:
            aside = self.path.with_name(f"state.json.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            log.info(f"state file was corrupt; moved it to {aside} and starting afresh")
            return {}

    def _known_hosts_text(self, data: dict[str, Any]) -> str:
        return "".join(f"{rec.alias} {key}\n" for pkey, rec in sorted(_records(data).items())
                       if rec.alias and self.trust(pkey, rec) for key in rec.host_keys)

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        from filelock import FileLock  # only writers pay for the import

        paths.private_dir(self.dir)
        with FileLock(str(self.dir / "state.lock"), timeout=30, mode=0o600):
            data = self._read()
            data.setdefault("jobs", {})
            yield data
            data["version"] = VERSION
            paths.write_private(self.known_hosts, self._known_hosts_text(data))
            paths.write_private(self.path, json.dumps(data, indent=1, sort_keys=True))
            self._data = data

    def sync_known_hosts(self) -> None:
        """Make ``known_hosts`` what the records and ``trust`` say (a read when it is already)."""
        try:
            current: str | None = self.known_hosts.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != self._known_hosts_text(self._cached()):
            with self._locked():
                pass

    def record(self, rec: JobRecord) -> None:
        with self._locked() as data:
            data["jobs"][rec.profile] = rec._asdict()

    def forget_where(self, stale: Callable[[JobRecord], bool]) -> None:
        """Drop every record ``stale`` says is; nothing is written when none is."""
        if not any(stale(rec) for rec in self.jobs().values()):
            return
        with self._locked() as data:
            for key, rec in _records(data).items():
                if stale(rec):
                    del data["jobs"][key]

    def forget(self, profile_key: str, job_id: str | None = None) -> None:
        """Drop the record (only if it still names ``job_id``, when given)."""
        with self._locked() as data:
            rec = data["jobs"].get(profile_key)
            if rec is not None and (job_id is None or not isinstance(rec, dict)
                                    or rec.get("job_id") == job_id):
                del data["jobs"][profile_key]


def _records(data: dict[str, Any]) -> dict[str, JobRecord]:
    raw = data.get("jobs", {})
    out = {}
    for key, rec in raw.items() if isinstance(raw, dict) else ():
        try:
            keys = rec.get("host_keys", ())
            keys = tuple(keys) if isinstance(keys, (list, tuple)) else ()
            out[key] = JobRecord(**{**rec, "host_keys": keys})
        except (TypeError, AttributeError):
            log.debug(f"state: dropping malformed record for {key}")
    return out
