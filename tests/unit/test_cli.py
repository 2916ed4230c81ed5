"""The command line through click's CliRunner, against a fake login node: each command's
success line, its one-line errors and exit codes, and the shapes of its output."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeLogin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from slurm_proxy import cli, config, doctor, log, manage, paths, slurm
from slurm_proxy.login import Result
from slurm_proxy.login import agent as agent_login

CONFIG = """\
[clusters.hpc]
login = "hpc"
[profiles.debug]
partition = "debug"
cpus = 1
pending_timeout = 60
[profiles.gpu]
partition = "gpu"
gres = "gpu:1"
"""
ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def job_line(job_id: str, profile: str, state: str = "RUNNING", node: str = "node1") -> str:
    return "|".join([job_id, state, "None" if state == "RUNNING" else "Priority",
                     node if state == "RUNNING" else "", "N/A", "59:00", f"slurm-proxy-{profile}",
                     f"slurm-proxy:hpc.{profile}"])


def out(*lines: str) -> Result:
    return Result(0, "".join(ln + "\n" for ln in lines), "")


@pytest.fixture
def cfg_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = Path(os.environ["SLURM_PROXY_CONFIG"])
    path.write_text(CONFIG)
    path.chmod(0o600)
    monkeypatch.setattr(log, "verbosity", 0)
    return path


@pytest.fixture
def login(monkeypatch: pytest.MonkeyPatch) -> Iterator[Login]:
    """``login(**answers)``: the fake login node every command will talk to."""
    made: list[FakeLogin] = []

    def use(**answers: Any) -> FakeLogin:
        fake = FakeLogin(**answers)
        made.append(fake)
        for module in (manage, cli):  # manage.login_to serves doctor and a connect too
            monkeypatch.setattr(module, "open_login", lambda *a, **k: fake)
        return fake

    yield use


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``run(*args)``: the command line as ``slurm-proxy`` runs it; (exit code, stdout, stderr)."""
    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # a command's own exit code
            code = e.code if isinstance(e.code, int) else 1
        got = capsys.readouterr()
        return code, got.out, got.err
    return invoke


Run = Callable[..., tuple[int, str, str]]
Login = Callable[..., FakeLogin]


def test_up_reports_the_running_job(run: Run, cfg_path: Path, login: Login) -> None:
    fake = login(squeue=[out(job_line("42", "debug"))], bash=[out(f"node1 {ED}")])
    code, stdout, _ = run("up", "debug")
    assert (code, stdout) == (0, "slurm-debug: job 42 running on node1\n")
    assert fake.commands == ["squeue", "bash"]


def test_up_no_wait_submits_under_the_lock(run: Run, cfg_path: Path, login: Login) -> None:
    fake = login(squeue=[out()], sbatch=[Result(0, "77\n", "")])
    code, stdout, stderr = run("up", "debug", "--no-wait")
    assert (code, stdout) == (0, "slurm-debug: submitted\n")
    assert fake.commands == ["squeue", "squeue", "sbatch"]
    assert (paths.state_dir() / "locks").is_dir()
    assert "submitted job 77 for profile debug" in stderr


def test_up_unknown_profile_lists_the_profiles(run: Run, cfg_path: Path, login: Login) -> None:
    code, _, stderr = run("up", "nope")
    assert code == 2
    assert stderr == f"slurm-proxy: unknown profile 'nope' (configured in {cfg_path}: debug, gpu)\n"


def test_a_broken_config_is_file_and_line(run: Run, cfg_path: Path) -> None:
    cfg_path.write_text(CONFIG + "[profiles.x\n")
    code, _, stderr = run("status")
    assert code == 2 and stderr.startswith(f"slurm-proxy: {cfg_path}:10: invalid TOML")


def test_down_cancels_only_recorded_jobs(run: Run, cfg_path: Path, login: Login) -> None:
    from slurm_proxy.state import JobRecord, State

    State(paths.state_dir()).record(JobRecord("42", "hpc.debug", 0.0, login="hpc"))
    fake = login(squeue=[out(job_line("42", "debug"), job_line("43", "gpu"))], scancel=[out()])
    code, stdout, _ = run("down", "--all")
    assert (code, stdout) == (0, "cancelled 42\n")  # 43 is not recorded here: never cancelled
    assert fake.calls[-1] == slurm.scancel_argv(["42"])


def test_down_keeps_known_hosts_to_what_the_config_vouches_for(
        run: Run, cfg_path: Path, login: Login) -> None:
    """A record the config no longer makes (a removed profile) lends its node's keys to nobody,
    also after ``down`` rewrites the state."""
    from slurm_proxy.state import JobRecord, State

    state = State(paths.state_dir(), trust=manage.trusted_by(config.load()))
    state.record(JobRecord("42", "hpc.debug", 0.0, "slurm-debug", "node1", (ED,), login="hpc"))
    state.record(JobRecord("41", "hpc.removed", 0.0, "slurm-removed", "node9", (ED,), login="hpc"))
    assert state.known_hosts.read_text() == f"slurm-debug {ED}\n"
    login(squeue=[out(job_line("42", "debug"), job_line("41", "removed"))], scancel=[out()])
    assert run("down", "debug")[:2] == (0, "cancelled 42\n")
    assert state.known_hosts.read_text() == ""


def test_down_with_nothing_to_cancel(run: Run, cfg_path: Path, login: Login) -> None:
    login(squeue=[out()])
    assert run("down", "debug")[:2] == (0, "nothing to cancel\n")


def test_down_needs_profiles_or_all(run: Run, cfg_path: Path) -> None:
    code, _, stderr = run("down")
    assert code == 2 and stderr.endswith("slurm-proxy: name one or more profiles, or --all\n")
    assert "Usage: slurm-proxy down" in stderr and "Error:" not in stderr


def test_status_json_shape(run: Run, cfg_path: Path, login: Login) -> None:
    login(squeue=[out(job_line("42", "debug"), job_line("50", "gpu", "PENDING"))])
    code, stdout, _ = run("status", "--json")
    rows = {r["profile"]: r for r in json.loads(stdout)}
    assert code == 0 and set(rows["debug"]) == {"profile", "alias", "cluster", "job_id", "state",
                                                "reason", "node", "time_left", "idle_timeout"}
    debug = rows["debug"]
    assert (debug["state"], debug["node"], debug["time_left"]) == ("RUNNING", "node1", 3540)
    assert (rows["gpu"]["state"], rows["gpu"]["reason"], rows["gpu"]["node"]) == ("PENDING", "Priority", None)


def test_status_table(run: Run, cfg_path: Path, login: Login) -> None:
    login(squeue=[out(job_line("42", "debug"))])
    code, stdout, _ = run("status")
    lines = stdout.splitlines()
    assert code == 0
    assert lines[0].split() == ["ALIAS", "JOB", "STATE", "NODE", "TIME", "LEFT", "IDLE", "CANCEL"]
    assert lines[1].split()[:4] == ["slurm-debug", "42", "running", "node1"]
    assert lines[2].split()[:3] == ["slurm-gpu", "-", "-"]


SINFO = out("debug*|gpu:2|2|1:00:00", "gpu|gpu:a100:4(S:0-1)|64|2-00:00:00", "cpu|(null)|128|infinite")


def test_init_print_proposes_profiles(run: Run, tmp_path: Path, login: Login) -> None:
    login(sinfo=[SINFO])
    code, stdout, _ = run("init", "--login", "me@hpc.example.org", "--print")
    assert code == 0
    parsed = tomllib.loads(stdout)
    assert parsed["clusters"]["hpc"]["login"] == "me@hpc.example.org"
    assert sorted(parsed["profiles"]) == ["cpu", "debug", "debug-gpu", "gpu"]  # gpu, not gpu-gpu
    assert parsed["profiles"]["gpu"]["gres"] == "gpu:1"


def test_init_writes_0600_says_the_next_step_and_never_overwrites(run: Run,
        tmp_path: Path, login: Login) -> None:
    login(sinfo=[SINFO])
    code, _, stderr = run("init", "--login", "hpc", "--non-interactive")
    path = Path(os.environ["SLURM_PROXY_CONFIG"])
    assert code == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "wrote" in stderr and "next: slurm-proxy ssh-config --install, then ssh slurm-debug" in stderr
    again = run("init", "--login", "hpc", "--non-interactive")
    assert again[0] == 1 and again[2] == f"slurm-proxy: {path} exists; not overwritten (use --force)\n"


def test_init_refuses_an_option_as_login(run: Run, tmp_path: Path) -> None:
    code, _, stderr = run("init", "--login=-oProxyCommand=x", "--non-interactive")
    assert code == 2 and "not an ssh destination" in stderr and "Error:" not in stderr


def test_ssh_config_prints_the_block(run: Run, cfg_path: Path) -> None:
    code, stdout, _ = run("ssh-config")
    assert code == 0 and "Host slurm-*" in stdout and "ProxyCommand" in stdout


def test_doctor_without_a_config_says_run_init(run: Run, tmp_path: Path) -> None:
    code, stdout, _ = run("doctor")
    assert code == 1
    assert "✗ config:" in stdout and "fix: create one: slurm-proxy init" in stdout


def test_doctor_counts_profiles_in_words(run: Run, cfg_path: Path, login: Login,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "find_ssh", lambda: "/bin/true")
    monkeypatch.setattr(doctor, "vscode_settings_files", lambda: [])
    login(sh=[out("/usr/bin/sbatch", "/usr/bin/squeue", "/usr/bin/scancel", "/usr/bin/scontrol")])
    code, stdout, _ = run("doctor", "debug")
    assert f"✓ config: {cfg_path}: 2 profiles" in stdout
    assert "✓ Slurm commands: all found" in stdout and "✓ connection sharing" in stdout
    assert code == 0, stdout


def test_connect_completes_aliases(run: Run, cfg_path: Path) -> None:
    from click.shell_completion import ShellComplete

    complete = ShellComplete(cli.cli, {}, "slurm-proxy", "_SLURM_PROXY_COMPLETE")
    assert [c.value for c in complete.get_completions(["connect"], "slurm-g")] == ["slurm-gpu"]



def test_node_findings_name_the_file_and_the_fix() -> None:
    from slurm_proxy import node_doctor

    found = {"stray-at": "/home/me/.bashrc:3", "ulimit-v": "4000000", "glibc": "2.17",
             "free-kb": "2048", "free-inodes": "100", "internet": "no", "tty-gid": "5",
             "devpts": "rw,nosuid,noexec,relatime,mode=600,ptmxmode=000"}
    lines = {c.name: c for c in node_doctor.judge("hello", found)}
    assert lines["quiet sessions"].ok is False and "/home/me/.bashrc:3" in lines["quiet sessions"].detail
    assert lines["virtual memory"].ok is False and "4000000" in lines["virtual memory"].detail
    assert lines["glibc"].ok is False and "2.28" in lines["glibc"].detail
    assert lines["home directory"].ok is None and "serverInstallPath" in lines["home directory"].fix
    assert "localServerDownload" in lines["internet"].fix
    assert lines["terminals"].ok is None and "gid=5,mode=620" in lines["terminals"].fix
    good = {"ulimit-v": "unlimited", "glibc": "2.36", "free-kb": "99999999", "free-inodes": "9999999",
            "internet": "yes", "tty-gid": "5", "devpts": "rw,relatime,gid=5,mode=620,ptmxmode=000",
            "slurm": "slurm-wlm 22.05.8"}
    assert all(c.ok for c in node_doctor.judge("", good))


@pytest.mark.parametrize(("said", "ok", "named"), [
    ("slurm 20.11.4", None, "20.11.4"),            # upstream's srun --version
    ("slurm-wlm 21.08.5", None, "21.08.5"),        # Debian's
    ("slurm-wlm 22.05.8", True, "22.05.8"),
    ("slurm 24.11.5", True, "24.11.5"),
    ("slurm 25.05.0-0rc1", True, "25.05.0"),
])
def test_node_findings_say_what_a_nested_srun_shares(said: str, ok: bool | None, named: str) -> None:
    from slurm_proxy import node_doctor

    (check,) = [c for c in node_doctor.judge("", {"slurm": said}) if c.name == "nested srun"]
    assert check.ok is ok and f"Slurm {named}:" in check.detail
    assert ("--gres=none" in check.fix) == (ok is None)
    adopt = [c for c in node_doctor.judge("", {"slurm": said}) if c.name == "pam_slurm_adopt"]
    assert [c.ok for c in adopt] == ([None] if ok is None else [])
    assert all("action_unknown" in c.detail and 'mode = "srun"' in c.fix for c in adopt)


@pytest.mark.parametrize("said", ["", "srun: command not found", "slurm"])
def test_node_findings_without_a_slurm_version_say_nothing_of_srun(said: str) -> None:
    from slurm_proxy import node_doctor

    assert "nested srun" not in {c.name for c in node_doctor.judge("", {"slurm": said})}


def test_init_quotes_a_partition_name_with_a_dot(run: Run, tmp_path: Path, login: Login) -> None:
    login(sinfo=[out("gpu.a100|gpu:4|64|1-00:00:00", "cpu.big|(null)|128|infinite")])
    code, stdout, _ = run("init", "--login", "hpc", "--print")
    assert code == 0 and sorted(tomllib.loads(stdout)["profiles"]) == ["cpu.big", "gpu.a100"]
    path = Path(os.environ["SLURM_PROXY_CONFIG"])
    path.write_text(stdout)
    path.chmod(0o600)
    assert sorted(config.load(path).profiles) == ["cpu.big", "gpu.a100"]


def test_agent_status_shows_each_login(run: Run, cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_000_000.0
    monkeypatch.setattr("time.time", lambda: now)
    held = agent_login.AgentStatus(4242, now - 125, 600, [
        agent_login.HeldLogin("hpc", now - 120, 2, 0.0), agent_login.HeldLogin("other", now - 60, 0, 30.0)])
    monkeypatch.setattr(agent_login, "status", lambda home: held)
    assert run("agent", "--status") == (0, "agent: pid 4242, up 0:02:05, exits after 0:10:00 with no login "
                                           "and no connect\n  hpc: logged in 0:02:00 ago, 2 open channels\n"
                                           "  other: logged in 0:01:00 ago, unused for 0:00:30\n", "")


def test_agent_without_one_running(run: Run, cfg_path: Path) -> None:
    assert run("agent", "--status") == (0, "no agent is running\n", "")
    assert run("agent", "--stop") == (0, "no agent is running\n", "")


def test_agent_takes_one_action(run: Run, cfg_path: Path) -> None:
    code, _, stderr = run("agent", "--status", "--stop")
    assert code == 2 and stderr.endswith("slurm-proxy: choose one of --status, --stop, --foreground\n")
