"""The local record of jobs slurm-proxy submitted, the node each alias resolved to and that
node's host keys.

One JSON file, 0600, replaced atomically. A corrupt file is set aside and rebuilt; a file that is
a symlink or belongs to someone else is refused, never followed. Beside it, ``known_hosts`` holds
``<alias> <key>`` lines for ssh (the Host block names it as ``UserKnownHostsFile``), rewritten from
the records whenever they change.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
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


class State:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "state.json"
        self.known_hosts = directory / "known_hosts"

    # -- reading ---------------------------------------------------------------------------
    def jobs(self) -> dict[str, JobRecord]:
        """Profile key → the job we submitted for it."""
        raw = self._read().get("jobs", {})
        out = {}
        for key, rec in raw.items() if isinstance(raw, dict) else ():
            try:
                keys = rec.get("host_keys", ())
                out[key] = JobRecord(**{**rec, "host_keys": tuple(keys) if isinstance(keys, list) else ()})
            except (TypeError, AttributeError):
                log.debug(f"state: dropping malformed record for {key}")
        return out

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
            lines = [f"{rec['alias']} {key}\n" for rec in data["jobs"].values()
                     if isinstance(rec, dict) and rec.get("alias")
                     for key in rec.get("host_keys", ())]
            paths.write_private(self.known_hosts, "".join(lines))
            paths.write_private(self.path, json.dumps(data, indent=1, sort_keys=True))

    def record(self, rec: JobRecord) -> None:
        with self._locked() as data:
            data["jobs"][rec.profile] = rec._asdict()

    def forget(self, profile_key: str, job_id: str | None = None) -> None:
        """Drop the record (only if it still names ``job_id``, when given)."""
        with self._locked() as data:
            rec = data["jobs"].get(profile_key)
            if rec is not None and (job_id is None or not isinstance(rec, dict)
                                    or rec.get("job_id") == job_id):
                del data["jobs"][profile_key]
