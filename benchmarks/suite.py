"""The benchmark suite, side by side in one run on the loopback test cluster.

    sudo /opt/slurm-proxy/venv/bin/python benchmarks/suite.py [--rounds 11] [--quick] [--warm]

Run as root it re-runs itself as the test user sptest (reading this file from stdin, since the
checkout may not be readable by sptest: which is also why the few cluster helpers here are not
imported from tests/integration). It prints a Markdown table:

  startup      `slurm-proxy --version`
  floor        multiplexed `ssh -W node:22` straight to the job's node (one node handshake)
  jump         manual `ssh -J testlogin node` (a second full handshake with the login node)
  warm         `ssh slurm-debug true` with the job running, per mode and backend; and on a node
               that also runs another job of the user's (adopt routed through srun)
  20 ms RTT    floor, jump and warm again through a relay this script runs in front of the
               login sshd, 10 ms late each way (Host testlogin-relay in sptest's ssh config)
  cold         `ssh slurm-debug true` with no job: submit, wait, connect; and the same less the
               time slurmctld took from the job's first sight in squeue to RUNNING
  RUNNING →    from the job turning RUNNING (squeue polled every 50 ms by this script) to the
  connected    end of a connect that was waiting for it, released early and late in the wait
  16-way       16 concurrent cold connects: wall time, successes, jobs
  RPCs         slurmctld RPCs of one warm connect (sdiag's per-user counts)
  bulk         200 MB into `cat > /dev/null` through each mode and backend, beside the floor
               and `ssh -J`
  agent        the login agent: logins (counted in the login sshd's log) for 8 concurrent cold
               connects, its warm connect beside OpenSSH's multiplexed one, its memory idle and
               with 16 open tunnels
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from slurm_proxy.config import BACKENDS, MODES  # the venv's slurm-proxy: sptest can import it

USER = "sptest"
VENV = Path("/opt/slurm-proxy/venv")
STATE = Path("/home") / USER / ".local/state/slurm-proxy"
SSH = ["ssh", "-o", "BatchMode=yes"]
BULK_MB = 200
LOGIN_LOG = Path("/var/lib/slurm-proxy-testcluster/log/sshd-login.log")  # contrib/testcluster/up: 0644
LOGIN_PORT, RELAY_PORT = 2222, 2322  # the login sshd; the relay (Host testlogin-relay)
RELAY_DELAY = 0.010  # seconds each way


def as_test_user() -> None:
    home = f"/home/{USER}"
    env = [f"HOME={home}", f"USER={USER}", f"LOGNAME={USER}", f"PATH={VENV}/bin:/usr/bin:/bin"]
    with open(__file__, "rb") as me:
        proc = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *env,
                               str(VENV / "bin" / "python"), "-", *sys.argv[1:]], stdin=me)
    sys.exit(proc.returncode)


def run(argv: list[str], env: dict[str, str] | None = None, stdin: int | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL if stdin is None else stdin,
                          capture_output=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {argv}: {proc.stderr.decode(errors='replace')}")
    return elapsed


def squeue(*args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "--me", "-h", "-o", "%i %j %T %N", *args], capture_output=True,
                         text=True, check=True).stdout
    return [line.split() for line in out.splitlines()]


def cancel_all() -> None:
    subprocess.run(["scancel", "-u", USER], check=True)
    while squeue():
        time.sleep(0.2)
    (STATE / "state.json").unlink(missing_ok=True)


def user_rpcs() -> int:
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    section = out.split("Remote Procedure Call statistics by user", 1)[1]
    m = re.search(rf"^\s*{USER}\s*\(\s*\d+\)\s*count:(\d+)", section, re.M)
    return int(m.group(1)) if m else 0


def config(directory: Path, mode: str, backend: str, login: str = "testlogin") -> dict[str, str]:
    path = directory / f"{mode}-{backend}-{login}.toml"
    path.write_text(f'[clusters.test]\nlogin = "{login}"\nmode = "{mode}"\nbackend = "{backend}"\n'
                    '[profiles.debug]\npartition = "debug"\ncpus = 1\ntime = "1:00:00"\n')
    return {"SLURM_PROXY_CONFIG": str(path)}


def median_of(rounds: int, **commands: Callable[[], float]) -> dict[str, float]:
    """Each command ``rounds`` times, alternating, so drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(rounds):
        for k, f in commands.items():
            times[k].append(f())
    return {k: statistics.median(v) for k, v in times.items()}


def bulk(argv: list[str], env: dict[str, str] | None = None) -> float:
    """MB/s of BULK_MB from /dev/zero into `cat > /dev/null` at the far end."""
    with subprocess.Popen(["head", "-c", f"{BULK_MB}M", "/dev/zero"], stdout=subprocess.PIPE) as src:
        elapsed = run([*argv, "cat > /dev/null"], env, stdin=src.stdout.fileno())  # type: ignore[union-attr]
    return BULK_MB / elapsed


def block_nodes() -> list[str]:
    """Hand jobs holding every CPU, so the next job pends (Resources)."""
    ids = []
    for _ in range(2):
        out = subprocess.run(["sbatch", "--parsable", "-J", "blocker", "-p", "debug", "-N1", "-c2",
                              "-o", "/dev/null", "--wrap", "sleep 600"],
                             capture_output=True, text=True, check=True).stdout
        ids.append(out.strip().split(";")[0])
    while any(j[2] != "RUNNING" for j in squeue("-n", "blocker")):
        time.sleep(0.2)
    return ids


class Watch:
    """A thread polling squeue every 50 ms: when slurm-proxy's job first shows, and when it runs
    (this script's own queries, to split a connect into slurmctld's part and the rest)."""

    def __init__(self) -> None:
        self.seen = self.running = 0.0
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self.running:
            states = [j[2] for j in squeue("-n", "slurm-proxy-debug")]
            now = time.perf_counter()
            self.seen = self.seen or (now if states else 0.0)
            self.running = now if "RUNNING" in states else 0.0
            time.sleep(0.05)

    def join(self) -> None:
        self._thread.join()


def cold_connect() -> tuple[float, float]:
    """(the whole cold connect, slurmctld's part: from the job's first sight to RUNNING)."""
    cancel_all()
    watch = Watch()
    elapsed = run([*SSH, "slurm-debug", "true"])
    watch.join()
    return elapsed, watch.running - watch.seen


def running_to_connected(release_after: float) -> float:
    """Seconds from RUNNING to connected, for a connect that waited ``release_after`` s."""
    cancel_all()
    blockers = block_nodes()
    watch = Watch()
    start = time.perf_counter()
    proc = subprocess.Popen([*SSH, "slurm-debug", "true"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(max(0.0, release_after - (time.perf_counter() - start)))
    subprocess.run(["scancel", *blockers], check=True)
    proc.wait()
    done = time.perf_counter()
    watch.join()
    return done - watch.running


def start_relay(delay: float) -> None:
    """127.0.0.1:RELAY_PORT → the login sshd, every byte ``delay`` late each way, in a thread."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        late: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await late.get()
                await asyncio.sleep(due - loop.time())
                if not data:
                    writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivering = loop.create_task(deliver())
        data = b"x"
        while data:
            data = await reader.read(65536)
            late.put_nowait((loop.time() + delay, data))
        await delivering

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        login_r, login_w = await asyncio.open_connection("127.0.0.1", LOGIN_PORT)
        await asyncio.gather(pipe(client_r, login_w), pipe(login_r, client_w), return_exceptions=True)
        client_w.close()
        login_w.close()

    def serve() -> None:
        loop.run_until_complete(asyncio.start_server(relay, "127.0.0.1", RELAY_PORT))
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait()


def relay_rows(tmp: Path, rounds: int, node: str) -> list[tuple[str, str, str, str]]:
    """Floor, jump and warm connect at 20 ms RTT to the login node, side by side."""
    from slurm_proxy.login import sockets

    start_relay(RELAY_DELAY)
    env = config(tmp, "adopt", "openssh", "testlogin-relay")
    run([*SSH, "slurm-debug", "true"], env)  # the relay's master; the job's node checked
    run([*SSH, "slurm-debug", "true"], env)
    sock = sockets.socket_path("testlogin-relay", STATE)
    floor = [*SSH, "-o", f"ProxyCommand=ssh -o ControlPath={sock} -W %h:22 testlogin-relay", node, "true"]
    jump = [*SSH, "-o", "ControlPath=none", "-J", "testlogin-relay", node, "true"]
    med = median_of(rounds, floor=partial(run, floor), jump=partial(run, jump),
                    warm=partial(run, [*SSH, "slurm-debug", "true"], env))
    return [
        ("20 ms RTT: floor, multiplexed `ssh -W`", f"{med['floor']:.3f} s", "", ""),
        ("20 ms RTT: manual `ssh -J`", f"{med['jump']:.3f} s", "", ""),
        ("20 ms RTT: warm connect (adopt, openssh)", f"{med['warm']:.3f} s",
         f"{med['warm'] / med['floor']:.2f}x floor, {med['warm'] / med['jump']:.2f}x -J", "≤ 1.05x floor"),
    ]


def warm_rows(tmp: Path, rounds: int) -> list[tuple[str, str, str, str]]:
    """The warm connect against the floor alone, two by two (``--warm``), on loopback and at
    20 ms RTT: no `ssh -J` login between them to load the machine."""
    from slurm_proxy.login import sockets

    start_relay(RELAY_DELAY)
    rows = []
    for login, where, goal in (("testlogin", "loopback", "≤ 1.10x"),
                               ("testlogin-relay", "20 ms RTT", "≤ 1.05x")):
        env = config(tmp, "adopt", "openssh", login)
        for _ in range(3):  # the job, its node checked, the memo and its asker
            run([*SSH, "slurm-debug", "true"], env)
        (_, _, _, node), = squeue()
        sock = sockets.socket_path(login, STATE)
        floor = [*SSH, "-o", f"ProxyCommand=ssh -o ControlPath={sock} -W %h:22 {login}", node, "true"]
        warm = [*SSH, "slurm-debug", "true"]
        med = median_of(rounds, floor=partial(run, floor), warm=partial(run, warm, env))
        rows.append((f"{where}: warm connect (adopt, openssh) beside the floor alone", f"{med['warm']:.3f} s",
                     f"{med['warm'] / med['floor']:.2f}x floor ({med['floor']:.3f} s)", goal + " floor"))
    return rows


def logins() -> int:
    return LOGIN_LOG.read_text(errors="replace").count(f"Accepted publickey for {USER} ")


def agent_pid() -> int:
    out = subprocess.run([str(VENV / "bin" / "slurm-proxy"), "agent", "--status"], capture_output=True,
                         text=True, check=True).stdout
    m = re.match(r"agent: pid (\d+)", out)
    if not m:
        sys.exit(f"no agent: {out}")
    return int(m.group(1))


def rss_mb(pid: int) -> float:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def agent_rows(tmp: Path, rounds: int) -> list[tuple[str, str, str, str]]:
    """The agent: one login for 8 concurrent cold connects; its warm connect beside OpenSSH's
    multiplexed one, alternating; its memory idle and with 16 open tunnels."""
    env, openssh = config(tmp, "adopt", "agent"), config(tmp, "adopt", "openssh")
    subprocess.run([str(VENV / "bin" / "slurm-proxy"), "agent", "--stop"], check=True, capture_output=True)
    cancel_all()
    before = logins()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: subprocess.run([*SSH, "slurm-debug", "true"], capture_output=True,
                                                       env={**os.environ, **env}).returncode, range(8)))
    made = logins() - before
    run([*SSH, "slurm-debug", "true"], openssh)  # the master, warm too
    warm = median_of(rounds, agent=partial(run, [*SSH, "slurm-debug", "true"], env),
                     openssh=partial(run, [*SSH, "slurm-debug", "true"], openssh))
    pid = agent_pid()
    idle = rss_mb(pid)
    sessions = [subprocess.Popen([*SSH, "slurm-debug", "echo open; sleep 60"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, env={**os.environ, **env}) for _ in range(16)]
    opened = sum(p.stdout.readline() == b"open\n" for p in sessions)  # type: ignore[union-attr]
    busy = rss_mb(pid)
    for p in sessions:
        p.kill()
        p.wait()
    return [
        ("agent: logins for 8 concurrent cold connects (login sshd's log)", f"{made}",
         f"{codes.count(0)}/8 ok", "1"),
        ("agent: warm connect (adopt)", f"{warm['agent']:.3f} s",
         f"{warm['agent'] / warm['openssh']:.2f}x openssh-mux ({warm['openssh']:.3f})", "≤ 1.1x openssh"),
        ("agent: memory idle / with 16 open tunnels", f"{idle:.0f} / {busy:.0f} MB RSS",
         f"{opened}/16 open", "report"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no late release")
    ap.add_argument("--warm", action="store_true", help="only the warm connect beside the floor")
    args = ap.parse_args()
    rounds = 3 if args.quick else args.rounds
    tmp = Path(tempfile.mkdtemp(prefix="sp-bench-"))
    if args.warm:
        print_table(warm_rows(tmp, rounds), rounds)
        cancel_all()
        return
    rows: list[tuple[str, str, str, str]] = []  # (what, value, ratio, goal)

    startup = median_of(rounds, v=lambda: run([str(VENV / "bin" / "slurm-proxy"), "--version"]))["v"]
    rows.append(("startup: `slurm-proxy --version`", f"{startup * 1000:.0f} ms", "", "≤ 150 ms"))

    colds = [cold_connect() for _ in range(3 if args.quick else 5)]
    cold = [c for c, _ in colds]
    ours = [c - slurm for c, slurm in colds]
    (_, _, _, node), = squeue()
    sock = next(p for p in (STATE / "cm").iterdir() if p.is_socket())
    floor_argv = [*SSH, "-o", f"ProxyCommand=ssh -o ControlPath={sock} -W %h:22 testlogin", node]
    jump_argv = [*SSH, "-o", "ControlPath=none", "-J", "testlogin", node]
    med = median_of(rounds, floor=lambda: run([*floor_argv, "true"]),
                    jump=lambda: run([*jump_argv, "true"]), warm=lambda: run([*SSH, "slurm-debug", "true"]))
    before = user_rpcs()
    for _ in range(10):
        run([*SSH, "slurm-debug", "true"])
    rpcs = (user_rpcs() - before) / 10
    neighbour = subprocess.run(["sbatch", "--parsable", f"--nodelist={node}", "--cpus-per-task=1",
                                "--output=/dev/null", "--job-name=neighbour", "--wrap=sleep 600"],
                               capture_output=True, text=True, check=True).stdout.strip()
    while not [j for j in squeue() if j[0] == neighbour and j[2] == "RUNNING"]:
        time.sleep(0.2)
    run([*SSH, "slurm-debug", "true"])  # the first sight of the shared node checks the route once
    shared = median_of(rounds, w=lambda: run([*SSH, "slurm-debug", "true"]))["w"]
    subprocess.run(["scancel", neighbour], check=True)
    while any(j[0] == neighbour for j in squeue()):
        time.sleep(0.2)
    rows += [
        ("floor: multiplexed `ssh -W` to the node", f"{med['floor']:.3f} s", "", ""),
        ("manual `ssh -J`", f"{med['jump']:.3f} s", "", ""),
        ("warm connect (adopt, openssh)", f"{med['warm']:.3f} s",
         f"{med['warm'] / med['floor']:.2f}x floor, {med['warm'] / med['jump']:.2f}x -J",
         "≤ 1.10x floor, ≤ 0.55x -J"),
        ("warm connect, node shared with another job (adopt → srun)", f"{shared:.3f} s",
         f"{shared / med['floor']:.2f}x floor, {shared / med['jump']:.2f}x -J", ""),
        ("cold connect", f"{statistics.median(cold):.2f} s",
         f"min {min(cold):.2f}, max {max(cold):.2f}; without slurmctld's start: "
         f"{statistics.median(ours):.2f} s", "≤ 1.6 s"),
        ("slurmctld RPCs per warm connect", f"{rpcs:.1f}",
         "one squeue of the user's jobs (jobs + partitions)", "1 query"),
    ]
    rows += relay_rows(tmp, rounds, node)

    for mode in MODES:
        for backend in BACKENDS:
            env = config(tmp, mode, backend)
            cancel_all()
            run([*SSH, "slurm-debug", "true"], env)
            warm = median_of(rounds, w=partial(run, [*SSH, "slurm-debug", "true"], env))["w"]
            bw = median_of(3, floor=partial(bulk, floor_argv), jump=partial(bulk, jump_argv),
                           this=partial(bulk, [*SSH, "slurm-debug"], env))
            goal = "≥ 0.95x floor" if backend == "openssh" and mode == "adopt" else (
                "≥ 0.85x -J" if backend != "openssh" else "")
            rows.append((f"{mode}, {backend}: warm / bulk 200 MB", f"{warm:.3f} s / {bw['this']:.0f} MB/s",
                         f"{bw['this'] / bw['floor']:.2f}x floor ({bw['floor']:.0f}), "
                         f"{bw['this'] / bw['jump']:.2f}x -J ({bw['jump']:.0f})", goal))
    rows += agent_rows(tmp, rounds)

    early = running_to_connected(3)
    rows.append(("RUNNING → connected, released after 3 s", f"{early:.2f} s", "", "≤ 1 s"))
    if not args.quick:
        late = running_to_connected(20)
        rows.append(("RUNNING → connected, released after 20 s", f"{late:.2f} s", "", "≤ 5 s"))

    cancel_all()
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: subprocess.run([*SSH, "slurm-debug", "true"],
                                                       capture_output=True).returncode, range(16)))
    wall = time.perf_counter() - start
    rows.append(("16 concurrent cold connects", f"{wall:.2f} s",
                 f"{codes.count(0)}/16 ok, {len(squeue())} job", "16/16, 1 job"))
    cancel_all()
    print_table(rows, rounds)


def print_table(rows: list[tuple[str, str, str, str]], rounds: int) -> None:
    print(f"| measured ({os.cpu_count()} cores, {rounds} rounds, medians) | value | ratio | goal |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if os.geteuid() == 0:
        as_test_user()
    main()
