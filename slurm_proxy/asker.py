"""The replay's query over one session that stays open on the login node.

A replay (``warm``) asks Slurm before every session. Over a new session on the master that costs
two round trips to the login node (the channel's opening, then the command), more than the hop's
start it runs beside. An asker keeps one session through the master running ``Shell.loop`` (one
squeue per marker it is sent) and serves the replays of that master over a Unix socket beside
the memos (``warm.asker_path``): a query is then one round trip, and a fresh squeue every time,
never an answer kept from before. The request names the command line it expects, so an asker
started for another one is never taken at its word.

A replay that finds none starts one for the next connect (``warm.start_asker``) and asks over
ssh, as it does whenever the asker cannot answer. An asker ends when its session ends (the master
is gone), when no one has asked for IDLE seconds, or when its socket is gone or another's.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO

from . import warm

IDLE = 600.0  # seconds without a query: the master's own ControlPersist
CHECK = 5.0  # seconds between looks at the session and the socket
NONCE = re.compile(r"slurm-proxy-[0-9a-f]{8,64}")  # warm.marker's shape


def main(argv: list[str]) -> int:
    """``asker PATH SSH-ARGV…``: serve on PATH the loop that SSH-ARGV runs."""
    path, ssh = argv[0], argv[1:]
    with contextlib.suppress(OSError):  # already a session's leader
        os.setsid()  # no terminal's ^C or hangup reaches it: it serves the connects that follow
    os.chdir("/")
    server = _listen(path)
    if server is None:  # another asker serves this path
        return 0
    mine = os.stat(path).st_ino
    proc = subprocess.Popen([ssh[0], *warm.ONLY_THROUGH_MASTER, *ssh[1:]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        serve(server, proc, ssh[-1], lambda: _still_mine(path, mine))
    finally:
        server.close()
        if _still_mine(path, mine):
            with contextlib.suppress(OSError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]  # the loop's read ends, and the session
        try:
            proc.wait(CHECK)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


def serve(server: socket.socket, proc: subprocess.Popen[bytes], line: str,
          still_mine: Callable[[], bool]) -> None:
    """Answer each request (a marker and the command line it expects, each on a line) with the
    loop's framed output for that marker, until the session ends or nobody asks."""
    server.settimeout(CHECK)
    last = time.monotonic()
    while proc.poll() is None and still_mine():
        try:
            conn, _ = server.accept()
        except (TimeoutError, socket.timeout):
            if time.monotonic() - last > IDLE:
                return
            continue
        last = time.monotonic()
        with conn:
            conn.settimeout(warm.ASK_TIMEOUT)
            try:
                nonce, _, asked = warm.recv_all(conn).decode().partition("\n")
            except (OSError, UnicodeDecodeError):
                continue
            if not NONCE.fullmatch(nonce):
                continue  # closed unanswered: the replay asks over ssh
            if asked != line + "\n":
                return  # the memo's query changed (login_shell): the next connect starts anew
            try:
                proc.stdin.write(nonce.encode() + b"\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except OSError:
                return
            answer = _answer(proc.stdout, nonce)  # type: ignore[arg-type]
            if answer is None:
                return
            with contextlib.suppress(OSError):
                conn.sendall(answer)


def _answer(out: IO[bytes], nonce: str) -> bytes | None:
    """What the loop printed up to ``nonce``'s end marker; None if the session ended first."""
    end = re.compile(re.escape(nonce.encode()) + rb" \d+\n")
    lines = []
    for raw in iter(out.readline, b""):
        lines.append(raw)
        if end.fullmatch(raw):
            return b"".join(lines)
    return None


def _listen(path: str) -> socket.socket | None:
    """A socket listening on ``path`` (a stale one replaced), or None if an asker serves it."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        try:
            server.bind(path)
        except OSError:
            if not os.path.exists(path) or warm.master_alive(path):
                server.close()
                return None
            os.unlink(path)
            server.bind(path)
    except OSError:
        server.close()
        return None
    finally:
        os.umask(old)
    server.listen(16)
    return server


def _still_mine(path: str, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
