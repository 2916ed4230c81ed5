"""Connect latency on the loopback test cluster, side by side in one run.

    sudo /opt/slurm-proxy/venv/bin/python benchmarks/connect.py [--rounds 11] [--cold 5]

Run as root it re-runs itself as the test user sptest (reading this file from stdin, since the
checkout may not be readable by sptest). Prints the median of each, alternating every round:

  floor    multiplexed `ssh -W node:22` straight to the job's node (one node handshake)
  jump     manual `ssh -J testlogin node` (a second full handshake with the login node)
  warm     `ssh slurm-debug true` with the job already running
  cold     `ssh slurm-debug true` with no job: submit, wait, connect

and the slurmctld RPCs a warm connect costs (from sdiag's per-user counts).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

USER = "sptest"
VENV = Path("/opt/slurm-proxy/venv")
STATE = Path("/home") / USER / ".local/state/slurm-proxy"
SSH = ["ssh", "-o", "BatchMode=yes"]


def as_test_user() -> None:
    home = f"/home/{USER}"
    env = [f"HOME={home}", f"USER={USER}", f"LOGNAME={USER}", f"PATH={VENV}/bin:/usr/bin:/bin"]
    with open(__file__, "rb") as me:
        proc = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *env,
                               str(VENV / "bin" / "python"), "-", *sys.argv[1:]], stdin=me)
    sys.exit(proc.returncode)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {argv}: {proc.stderr.decode(errors='replace')}")
    return elapsed


def our_jobs() -> list[list[str]]:
    out = subprocess.run(["squeue", "--me", "-h", "-o", "%i %j %T %N"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split() for line in out.splitlines()]


def cancel_all() -> None:
    subprocess.run(["scancel", "-u", USER], check=True)
    while our_jobs():
        time.sleep(0.2)
    (STATE / "state.json").unlink(missing_ok=True)


def user_rpcs() -> int:
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    section = out.split("Remote Procedure Call statistics by user", 1)[1]
    m = re.search(rf"^\s*{USER}\s*\(\s*\d+\)\s*count:(\d+)", section, re.M)
    return int(m.group(1)) if m else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--cold", type=int, default=5)
    args = ap.parse_args()

    cancel_all()
    cold = []
    for _ in range(args.cold):
        cancel_all()
        cold.append(timed([*SSH, "slurm-debug", "true"]))
    (_, _, _, node), = our_jobs()
    socks = list((STATE / "cm").iterdir())
    mux = ["-o", f"ControlPath={socks[0]}"]
    floor_cmd = [*SSH, "-o", f"ProxyCommand=ssh -o {mux[1]} -W %h:22 testlogin", node, "true"]
    jump_cmd = [*SSH, "-o", "ControlPath=none", "-J", "testlogin", node, "true"]
    warm_cmd = [*SSH, "slurm-debug", "true"]
    results: dict[str, list[float]] = {"floor": [], "jump": [], "warm": []}
    for _ in range(args.rounds):
        results["floor"].append(timed(floor_cmd))
        results["jump"].append(timed(jump_cmd))
        results["warm"].append(timed(warm_cmd))

    n = 10
    before = user_rpcs()
    for _ in range(n):
        timed(warm_cmd)
    rpcs = (user_rpcs() - before) / n
    cancel_all()

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"connect latency, median of {args.rounds} alternating rounds (cold: {args.cold})")
    print(f"  floor  multiplexed ssh -W to the node   {med['floor']:.3f} s")
    print(f"  jump   manual ssh -J login node         {med['jump']:.3f} s")
    print(f"  warm   ssh slurm-debug (job running)    {med['warm']:.3f} s   "
          f"{med['warm'] / med['floor']:.2f}x floor, {med['warm'] / med['jump']:.2f}x jump")
    print(f"  cold   ssh slurm-debug (no job)         {statistics.median(cold):.3f} s   "
          f"(min {min(cold):.3f}, max {max(cold):.3f})")
    print(f"  slurmctld RPCs per warm connect         {rpcs:.1f}")


if __name__ == "__main__":
    if os.geteuid() == 0:
        as_test_user()
    main()
