"""jobscript.py: the shell slurm-proxy runs on the cluster takes every value as an argument."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from slurm_proxy import jobscript
from slurm_proxy.config import MODES, Cluster, Profile

HOSTILE = ["node1", "$(touch /tmp/pwned)", "node1; rm -rf ~", "`id`", "-oProxyCommand=x", "a'b\"c", "n\nx"]


def scripts_in(argv: list[str]) -> list[str]:
    """The scripts an argv hands to a shell: the word after each ``-c``."""
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "-c"]


@pytest.mark.parametrize("mode", MODES)
def test_scripts_are_valid_bash(mode: str) -> None:
    profile = Profile("debug", Cluster("hpc", "hpc"), mode=mode)
    check, srun = scripts_in(jobscript.node_check_argv(mode, "n", "1")), scripts_in(jobscript.srun_argv("1"))
    assert any("sp_hostkey()" in s for s in check) and any('sp_sshd "$@"' in s for s in srun)
    for script in (jobscript.batch_script(profile), *check, *srun):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_only_mode_sshd_starts_an_sshd_in_the_batch_script() -> None:
    for mode in MODES:
        script = jobscript.batch_script(Profile("debug", Cluster("hpc", "hpc"), mode=mode))
        assert ("sp_sshd -D" in script) == (mode == "sshd")
        assert ("say ready" in script) == (mode != "sshd")


@pytest.mark.parametrize("node", HOSTILE)
def test_node_check_passes_node_and_job_as_their_own_words(node: str) -> None:
    argv = jobscript.node_check_argv("adopt", node, node)
    assert argv[:2] == ["bash", "-c"] and argv[3:] == ["slurm-proxy", "adopt", node, node, "0"]
    assert node not in argv[2]
    assert argv[2] == jobscript.node_check_argv("sshd", "other", "7", keyscan=True)[2]
    # Login.run sends shlex.join(argv) to the remote shell: each value comes back as one word.
    assert shlex.split(shlex.join(argv)) == argv


def test_node_check_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError):
        jobscript.node_check_argv("rsh", "node1", "1")


def test_srun_argv_runs_an_unbuffered_sshd_on_stdio_inside_the_job() -> None:
    argv = jobscript.srun_argv("42")
    assert argv[4:11] == ["srun", "--jobid=42", "--overlap", "--nodes=1", "--ntasks=1", "--quiet", "-u"]
    assert argv[-4:] == ["sp_sshd", "", "-i", "-e"]


def test_srun_argv_past_other_jobs_says_what_to_do_when_there_is_no_sshd() -> None:
    argv = jobscript.srun_argv("42", ("40", "41"))
    assert argv[-4:] == ["sp_sshd", "needed to reach job 42 past your jobs 40, 41 on this node: "
                         "cancel those, or ask for openssh-server", "-i", "-e"]


def test_a_batch_script_with_everything_is_unix_text_and_carries_the_setup_as_data() -> None:
    from slurm_proxy.config import Cluster, Profile

    profile = Profile(name="x", cluster=Cluster("c", "l"), mode="sshd", time="2:00",
                      setup=("echo '$(touch /tmp/pwned)'; EOF",), container="~/i.sif",
                      container_args=("--nv",))
    script = jobscript.batch_script(profile)
    assert "\r" not in script  # sbatch refuses DOS line breaks
    assert "pwned" not in script and "--nv" not in script  # base64: data, never script text
