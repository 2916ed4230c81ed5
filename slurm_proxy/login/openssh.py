"""The OpenSSH backend: the system ``ssh`` client with automatic connection sharing, so the Slurm
query and the final ``ssh -W`` hop ride one authenticated connection (one 2FA prompt), and ``exec``
of ssh for the hop, so the proxy's own process is gone once the session runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .. import log, paths
from ..errors import LoginError
from . import control, sockets
from .base import SSH_CONFIG_FILES, Result, no_exec
from .remote import Shell, forwarding_refusal

CONTROL_PERSIST = "10m"
# What `ssh -G` answers depends on: ssh's own config files, and Debian's drop-in directory that
# /etc/ssh/ssh_config includes (a file added there changes the directory's time).
WATCHED_CONFIG = (*SSH_CONFIG_FILES, "/etc/ssh/ssh_config.d")


def find_ssh() -> str:
    """``$SLURM_PROXY_SSH``, else the first ``ssh`` on PATH (without importing shutil)."""
    ssh = os.environ.get("SLURM_PROXY_SSH")
    if ssh:
        return ssh
    names = ["ssh.exe", "ssh"] if os.name == "nt" else ["ssh"]
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        for name in names:
            candidate = os.path.join(d, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    raise LoginError("(any)", "no `ssh` client found on PATH (install OpenSSH)")


def ssh_options(ssh: str, name: str) -> dict[str, str]:
    """The options ``ssh`` would use for ``name`` (``ssh -G``: every config file, first value
    wins), lowercase keys as ssh prints them; {} if ssh says nothing."""
    try:
        proc = subprocess.run([ssh, "-G", "--", name], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LoginError(name, f"`ssh -G` failed: {e}") from None
    options: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key.lower(), value)
    return options


class OpenSSHLogin:
    def __init__(self, destination: str, control_dir: Path | None = None,
                 login_shell: bool | None = None) -> None:
        self.destination = destination
        self.shell = Shell(destination, login_shell)
        self.ssh = find_ssh()
        self.control_dir = control_dir or paths.state_dir() / "cm"
        self.control_path: Path | None = None  # the master's socket, when slurm-proxy manages it
        self.logs_in_per_command = os.name == "nt"  # Windows' OpenSSH has no connection sharing
        self._options: list[str] | None = None

    @property
    def options(self) -> list[str]:
        """Connection sharing options, unless the user's ssh config already sets a ControlPath."""
        if self._options is None:
            self._options = ["-o", "ClearAllForwardings=yes"]
            if os.name != "nt":  # Windows' OpenSSH has no connection sharing
                paths.private_dir(self.control_dir)
                if not self._user_control_path():
                    self.control_path = sockets.socket_path(self.destination, paths.state_dir())
                    paths.private_dir(self.control_path.parent)
                    self._options += [
                        "-o", "ControlMaster=auto",
                        "-o", f"ControlPath={str(self.control_path).replace('%', '%%')}",
                        "-o", f"ControlPersist={CONTROL_PERSIST}",
                    ]
        return self._options

    def _user_control_path(self) -> bool:
        """Does the user's ssh config set a ControlPath for the login host? ``ssh -G`` knows; its
        answer is kept, keyed by the ssh config files' times, so warm connects skip it."""
        stamp = [_mtime(p) for p in WATCHED_CONFIG]
        cache = self.control_dir / "user-controlpath.json"
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        entry = known.get(self.destination) if isinstance(known, dict) else None
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp:
            return bool(entry[1])
        answer = self._ask_ssh_g()
        known = known if isinstance(known, dict) else {}
        known[self.destination] = [stamp, answer]
        paths.write_private(cache, json.dumps(known))
        return answer

    def _ask_ssh_g(self) -> bool:
        value = ssh_options(self.ssh, self.destination).get("controlpath", "none")
        if value in ("", "none"):
            return False
        log.debug(f"using the ControlPath from your ssh config: {value}")
        return True

    def run(self, argv: Sequence[str], stdin: str | None = None) -> Result:
        log.debug(f"run on {self.destination}: {log.shown(argv)}")
        return self.shell.run(self._send, argv, stdin)

    def _send(self, line: str, stdin: str | None) -> Result:
        cmd = self._command(line)
        with self._one_login():
            try:
                proc = subprocess.run(
                    cmd, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                    capture_output=True, text=True, errors="replace",
                )
            except OSError as e:
                raise LoginError(self.destination, f"cannot run ssh: {e}") from None
            if proc.returncode == 255:
                raise LoginError(self.destination, log.last_line(proc.stderr) or "ssh exited with 255")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    @contextmanager
    def _one_login(self) -> Iterator[None]:
        """A command that may have to log in (no live master): one connect at a time does, the
        others wait and share its master. Not for a user's own ControlPath, nor on Windows."""
        socket = self._managed_socket()
        with control.one_creator(socket, self.destination) if socket else nullcontext():
            yield

    def _managed_socket(self) -> Path | None:
        """The master's socket when slurm-proxy manages it (decided with the options)."""
        _ = self.options
        return self.control_path

    def sharing(self) -> tuple[bool | None, str]:
        if os.name == "nt":
            return None, "OpenSSH for Windows shares no connections: each ssh logs in anew"
        socket = self._managed_socket()
        if socket is None:
            return True, "your ssh config sets its own ControlPath"
        check = subprocess.run([self.ssh, *self.options, "-O", "check", "--", self.destination],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if check.returncode == 0:
            return True, f"a master connection serves {self.destination} ({socket})"
        return False, log.last_line(check.stderr) or "no master connection"

    def forwarding_refused(self, host: str, port: int) -> str:
        cmd = self.stdio_argv(host, port)
        with self._one_login():
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                return ""
        return "" if proc.stdout else forwarding_refusal(proc.stderr.decode(errors="replace"))

    def forward_stdio(self, host: str, port: int) -> int:
        return self._hand_over(self.stdio_argv(host, port))

    def forward_command(self, argv: Sequence[str]) -> int:
        log.debug(f"forward command: {log.shown(argv)}")
        return self._hand_over(self.command_argv(argv))

    # The ssh command lines a session is handed over to, and the query's (``warm``'s memo).

    def stdio_argv(self, host: str, port: int) -> list[str]:
        return [self.ssh, *self.options, "-W", f"{host}:{port}", "--", self.destination]

    def command_argv(self, argv: Sequence[str]) -> list[str]:
        return [self.ssh, *self.options, "-T", "-e", "none", "--", self.destination, self.shell.line(argv)]

    def query_argv(self, argv: Sequence[str]) -> list[str]:
        """ssh's argv that runs ``argv`` framed, less the marker its last word needs."""
        return self._command(self.shell.framed(argv))

    def loop_argv(self, argv: Sequence[str]) -> list[str]:
        """ssh's argv that runs ``argv`` once per marker sent to its stdin (``Shell.loop``)."""
        return self._command(self.shell.loop(argv))

    def _command(self, line: str) -> list[str]:
        return [self.ssh, *self.options, "-T", "--", self.destination, line]

    def _hand_over(self, cmd: list[str]) -> int:
        """Become ``cmd`` (ssh): our stdio is its stdio from here on."""
        log.debug("exec: " + log.shown(cmd))
        sys.stdout.flush()
        if no_exec():
            return subprocess.call(cmd)
        os.execv(self.ssh, cmd)


def _mtime(path: str) -> float:
    try:
        return os.stat(os.path.expanduser(path)).st_mtime
    except OSError:
        return 0.0
