"""A warm connect that the last one already decided, replayed without the full path.

A connect through slurm-proxy's own OpenSSH master that reached its running job and had nothing
to say leaves a *memo* for its alias (``memo``, written by ``proxy``): the queue's answer its
decision read, the files and variables it read, until when the decision holds (before the job's
warning and renewal are due), the ssh command line that asks the queue and the one the session
is handed to. The next connect of that alias (``connect``) checks those, asks the queue (the
master's ``asker``, else that command line over ssh), and when Slurm's answer is the memo's,
the full path would decide the same: the session is handed over at once (to the hop started
while the query ran, ``Hop``, or by exec). Anything else (another answer, a changed file or
variable, a master that is gone, ``-v``) takes the full path, which is given the answer: one
query either way.

The rule this keeps: a session goes where the full path would send it with the same answer
from Slurm. A job that ended or changed, or another job of the user's that starts on its node,
changes the answer, so it is noticed on the very connect that queries.

What changes between two answers without changing any decision is left out of the comparison:
the time left (``%L``, the sixth field of ``slurm.SQUEUE_FORMAT``), which the memo's expiry
covers. This module runs before anything else on a connect and imports only what Python has
loaded at start-up or built in (no pathlib, typing, re, json).
"""

from __future__ import annotations

import marshal
import os
import sys
import time

FORMAT = 2  # of a memo; another is ignored
# The replay's own ssh commands use the master or fail, and never prompt (the full path then
# logs in, under its lock).
ONLY_THROUGH_MASTER = ("-o", "ControlMaster=no", "-o", "BatchMode=yes")
CHUNK = 1 << 20  # bytes a relay passes per call at most
ASK_TIMEOUT = 20.0  # seconds a replay waits for the asker's answer before asking over ssh
MAX_SOCKET_PATH = 100  # bytes of a Unix socket's path that bind takes everywhere (macOS: 104)
# The kernel's numbers (F_SETPIPE_SZ: Linux's): the signal, errno and fcntl constants cost imports.
SIGTERM, EINVAL, F_SETPIPE_SZ = 15, 22, 1031
_NO_SPLICE: set[int] = set()  # stdio that os.splice cannot serve
SSH_FAILED = 255  # ssh's exit status when it could not run the command
TIME_LEFT_FIELD = 5  # %L's place in slurm.SQUEUE_FORMAT
# What the full path reads from the environment (a config, the state directory, ssh).
ENVIRONMENT = ("HOME", "PATH", "SLURM_PROXY_CONFIG", "SLURM_PROXY_HOME", "SLURM_PROXY_SSH",
               "SLURM_PROXY_NO_EXEC", "XDG_CONFIG_HOME", "XDG_STATE_HOME")
TYPE_CHECKING = False  # typing's costs 3 ms to import
if TYPE_CHECKING:
    from typing import Any

    # (mtime_ns, size, inode) of a file or directory, or () when it is missing
    Stamp = tuple[int, ...]


def state_dir() -> str:
    """slurm-proxy's own directory: ``$SLURM_PROXY_HOME``, else the platform's place for a
    user's local state (``paths.state_dir`` is this, as a Path)."""
    home = os.environ.get("SLURM_PROXY_HOME")
    if home:
        return os.path.expanduser(home)
    user = os.path.expanduser("~")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(user, "AppData", "Local")
    else:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(user, ".local", "state")
    return os.path.join(base, "slurm-proxy")


def memo_file(alias: str) -> str:
    return os.path.join(state_dir(), "warm", memo_name(alias))


def memo_name(alias: str) -> str:
    return alias.encode().hex()


def stamps(files: list[str]) -> list[tuple[str, Stamp]]:
    out: list[tuple[str, Stamp]] = []
    for path in files:
        try:
            st = os.stat(path)
            out.append((path, (st.st_mtime_ns, st.st_size, st.st_ino)))
        except OSError:
            out.append((path, ()))
    return out


def environment() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ENVIRONMENT}


def comparable(answer: str) -> str:
    """The queue's answer less what changes by itself (each line's time left)."""
    lines = []
    for line in answer.splitlines():
        fields = line.split("|", TIME_LEFT_FIELD + 1)
        if len(fields) > TIME_LEFT_FIELD:
            fields[TIME_LEFT_FIELD] = ""
        lines.append("|".join(fields))
    return "\n".join(lines)


def memo(files: list[tuple[str, Stamp]], until: float, socket: str, query: list[str], answer: str,
         hop: list[str], ask: list[str]) -> bytes:
    """A memo (``files``: the stamps the decision was made under; ``query``: the ssh argv that
    asks the queue, its last word the command line less its marker; ``answer``: the queue's
    answer the decision read; ``hop``: the argv the session is handed to; ``ask``: the ssh argv
    of the asker's loop that asks the same)."""
    return marshal.dumps({"format": FORMAT, "environment": environment(), "files": files, "until": until,
                          "socket": socket, "query": query, "answer": comparable(answer), "hop": hop,
                          "ask": ask})


def asker_path(socket: str) -> str:
    """Where the asker of the master at ``socket`` listens (``asker``)."""
    return os.path.join(state_dir(), "warm", os.path.basename(socket) + ".ask")


def start_asker(socket: str, ask: list[str]) -> None:
    """Start the asker of the master at ``socket`` unless one listens: in the background, as
    no child of ours (``sh`` starts it and is gone at once)."""
    path = asker_path(socket)
    if len(path.encode()) > MAX_SOCKET_PATH or master_alive(path):
        return
    argv = ["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 &', "sh", sys.executable, "-m",
            "slurm_proxy.asker", path, *ask]
    os.waitpid(os.posix_spawn(argv[0], argv, os.environ), 0)


def forget(alias: str) -> None:
    import contextlib

    with contextlib.suppress(OSError):
        os.unlink(memo_file(alias))


class Answer:
    """The queue's answer to a connect's query, for the full path to use instead of asking."""

    def __init__(self, nonce: str, returncode: int, stdout: str, stderr: str) -> None:
        self.nonce, self.returncode, self.stdout, self.stderr = nonce, returncode, stdout, stderr


def marker() -> str:
    """A fresh marker to frame one command's output (``login.remote``; ``asker.NONCE``)."""
    return "slurm-proxy-" + os.urandom(9).hex()


def connect(alias: str) -> Answer | None:
    """Hand the session over as the memo says when it holds (no return: exec the hop, or
    relay the one started early and exit with its status); else the answer of the query if one
    was asked, or None."""
    early = None
    try:
        memo = _load(alias)
        if memo is None:
            return None
        nonce = marker()
        query, hop = memo["query"], memo["hop"]
        argv = [query[0], *ONLY_THROUGH_MASTER, *query[1:-1], f"{query[-1]} {nonce}"]
        if "-W" in hop:  # a forward runs nothing on the login node: it may start before the answer
            early = Hop([hop[0], *ONLY_THROUGH_MASTER, *hop[1:]])
        returncode, stdout, stderr = _ask(memo, nonce) or _run(argv)
        status, body, _, _ = unframe(returncode, stdout, stderr, nonce)
        if status != 0 or comparable(body) != memo["answer"]:
            if early:
                early.stop()
            # On ssh's failure the full path asks again, and says what ssh says.
            return None if returncode == SSH_FAILED else Answer(nonce, returncode, stdout, stderr)
        if early is None:
            os.execv(hop[0], hop)
    except Exception:  # whatever went wrong here, the full path knows better
        if early:
            early.stop()
        return None
    raise SystemExit(early.relay())  # the answer is the memo's: the session's bytes may pass


class Hop:
    """The session's ssh started while the query runs (a new channel on the master, the node's
    TCP connect and its sshd's greeting: a round trip and more, off the critical path). Nothing
    passes until ``relay``: the node's greeting waits in a pipe, the client's in stdin, so a hop
    that turns out wrong is stopped before the session has been near it.

    ``relay`` then passes bytes between our stdio and the hop's until the hop is done: one more
    pipe each way for the session's life (``os.splice`` on Linux moves them without a copy)."""

    def __init__(self, argv: list[str]) -> None:
        to_r, self.to_hop = os.pipe()
        self.from_hop, from_w = os.pipe()
        self.hop_err, err_w = os.pipe()
        try:
            self.pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, to_r, 0), (os.POSIX_SPAWN_DUP2, from_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2)])
        except OSError:
            self._close(self.to_hop, self.from_hop, self.hop_err)
            raise
        finally:
            self._close(to_r, from_w, err_w)

    def stop(self) -> None:
        """End the hop unheard (what it said to stderr goes too)."""
        import contextlib

        with contextlib.suppress(OSError):
            os.kill(self.pid, SIGTERM)
        self._close(self.to_hop, self.from_hop, self.hop_err)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)

    def relay(self) -> int:
        """stdin → hop, hop's stdout → stdout, its stderr → stderr, until the hop has closed
        both of its own; the hop's exit status."""
        import select

        moves = {0: self.to_hop, self.from_hop: 1, self.hop_err: 2}
        if sys.platform == "linux":  # fewer, larger moves: each wakes three processes
            import fcntl

            for fd in (0, 1, self.to_hop, self.from_hop):
                try:  # noqa: SIM105  # as in _close
                    fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
                except OSError:  # not a pipe, or above the user's pipe limit
                    pass
        poller = select.poll()
        for fd in moves:
            poller.register(fd, select.POLLIN)
        while self.from_hop in moves or self.hop_err in moves:
            for fd, _ in poller.poll():
                if fd in moves and not _move(fd, moves[fd]):  # this direction is done
                    poller.unregister(fd)
                    self._close(fd if fd > 2 else moves[fd])  # stdin's end: the hop's EOF
                    del moves[fd]
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    @staticmethod
    def _close(*fds: int) -> None:
        for fd in fds:
            try:  # noqa: SIM105  # contextlib would cost 2 ms of imports here
                os.close(fd)
            except OSError:
                pass


def _move(src: int, dst: int) -> bool:
    """Pass what ``src`` has to ``dst``; False at its end, or when either side has failed."""
    try:
        if src not in _NO_SPLICE and hasattr(os, "splice"):  # Linux, Python 3.10+
            try:
                return os.splice(src, dst, CHUNK) > 0
            except OSError as e:
                if e.errno != EINVAL:  # EINVAL: a tty or the like, which splice cannot write
                    raise
                _NO_SPLICE.add(src)
        data = os.read(src, CHUNK)
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view):]
        return bool(data)
    except BlockingIOError:  # a non-blocking stdio another reader emptied first
        return True
    except OSError:
        return False


def _ask(memo: dict[str, Any], nonce: str) -> tuple[int, str, str] | None:
    """The query's answer from the asker of the memo's master (as ssh would give it: status,
    stdout, stderr); None when none answers (then one is started for the next connect) or the
    query failed."""
    import _socket

    if not memo["ask"]:
        return None
    path = asker_path(memo["socket"])
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(ASK_TIMEOUT)
    try:
        s.connect(path)
    except OSError:
        s.close()
        start_asker(memo["socket"], memo["ask"])
        return None
    try:
        s.sendall(f"{nonce}\n{memo['ask'][-1]}\n".encode())
        s.shutdown(_socket.SHUT_WR)
        out = recv_all(s).decode(errors="replace")
    except OSError:
        return None
    finally:
        s.close()
    # Only a whole answer is one: nothing, or no end marker, is none (never an empty queue).
    # A query that failed is asked again over ssh, which says why (the loop keeps no stderr).
    if unframe(SSH_FAILED, out, "", nonce)[0] != 0:
        return None
    return 0, out, ""


def recv_all(sock: Any) -> bytes:
    """What ``sock`` (``_socket``'s or ``socket``'s) receives until its peer's end."""
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _load(alias: str) -> dict[str, Any] | None:
    """The alias's memo, if it holds now (its files, variables, time and master unchanged)."""
    if os.name == "nt":
        return None
    path = memo_file(alias)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        memo = marshal.loads(f.read())  # noqa: S302  # our own file, private, checked above
    if not isinstance(memo, dict) or memo.get("format") != FORMAT:
        return None
    if memo["environment"] != environment() or time.time() >= memo["until"]:
        return None
    files = memo["files"]
    if stamps([p for p, _ in files]) != files or not master_alive(memo["socket"]):
        return None
    return memo


def _run(argv: list[str]) -> tuple[int, str, str]:
    """``argv``'s exit status, stdout and stderr, without the subprocess module's imports."""
    import select

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    finally:
        os.close(out_w)
        os.close(err_w)
    got: dict[int, list[bytes]] = {out_r: [], err_r: []}
    reading = [out_r, err_r]
    while reading:
        for fd in select.select(reading, [], [])[0]:
            data = os.read(fd, 65536)
            if data:
                got[fd].append(data)
            else:
                reading.remove(fd)
                os.close(fd)
    status = os.waitpid(pid, 0)[1]
    return (os.waitstatus_to_exitcode(status), b"".join(got[out_r]).decode(errors="replace"),
            b"".join(got[err_r]).decode(errors="replace"))


def master_alive(path: str | os.PathLike[str]) -> bool:
    """Does an ssh master listen on ``path``? (a connect, not a process: cheap on every connect)"""
    import _socket  # the C module: ``socket`` would cost 6 ms of imports

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(2.0)  # a master too busy to take us at once is still there
    try:
        s.connect(os.fspath(path))
    except (TimeoutError, _socket.timeout):  # the same class from Python 3.10 on
        return True
    except OSError:
        return False
    finally:
        s.close()
    return True


def unframe(returncode: int, out: str, err: str, nonce: str) -> tuple[int, str, str, str]:
    """(exit status, stdout, stderr, chatter) of a command framed by ``nonce``
    (``login.remote``'s framing) out of what the login shell sent; when the markers are missing
    (the shell never ran the script), ssh's status and stderr, all of stdout as chatter."""
    begin = nonce + "\n"
    start = _line_at(out, begin)
    if start < 0:
        return returncode, "", err, out
    chatter, body = out[:start], out[start + len(begin):]
    end = body.rfind("\n" + nonce + " ")
    if end >= 0:
        word = body[end + len(nonce) + 2:].strip()
        if word.isdigit():
            returncode = int(word)
        body = body[:end]
    err_start = _line_at(err, begin)
    if err_start >= 0:
        chatter += err[:err_start]
        err = err[err_start + len(begin):]
    return returncode, body, err, chatter


def _line_at(text: str, line: str) -> int:
    """Where ``line`` (newline included) stands on a line of its own in ``text``, or -1."""
    if text.startswith(line):
        return 0
    at = text.find("\n" + line)
    return at + 1 if at >= 0 else -1
