"""config.py: alias → profile name, and the TOML file validated with file:line errors."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slurm_proxy import config, config_file
from slurm_proxy.config import Cluster, Profile
from slurm_proxy.errors import BadAlias, ConfigError, UnknownProfile

CLUSTER = """\
[clusters.hpc]
login = "hpc"
"""


@pytest.fixture(autouse=True)
def _private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_PROXY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLURM_PROXY_CONFIG", str(tmp_path / "no-such-config.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the first line of ``text`` containing ``needle``."""
    for n, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in the test config")


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.path == path
    return info.value


# --- aliases ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("slurm-debug", "debug"),
        ("slurm-gpu2", "gpu2"),
        ("slurm-a.b_c-d", "a.b_c-d"),
        ("slurm-0", "0"),
        ("slurm-A100", "A100"),
        ("slurm-slurm-x", "slurm-x"),
        ("slurm-" + "a" * 64, "a" * 64),
    ],
)
def test_profile_name(alias: str, name: str) -> None:
    assert config.profile_name(alias) == name


@pytest.mark.parametrize(
    "alias",
    [
        pytest.param("slurm-a;b", id="semicolon"),
        pytest.param("slurm-$(id)", id="command-substitution"),
        pytest.param("slurm-`id`", id="backticks"),
        pytest.param("slurm-", id="empty-name"),
        pytest.param("", id="empty"),
        pytest.param("-oProxyCommand=x", id="option"),
        pytest.param("slurm--oProxyCommand=x", id="option-after-prefix"),
        pytest.param("slurm-../../x", id="path-traversal"),
        pytest.param("slurm-.hidden", id="leading-dot"),
        pytest.param("slurm-_x", id="leading-underscore"),
        pytest.param("slurm-a/b", id="slash"),
        pytest.param("slurm-a b", id="space"),
        pytest.param("slurm-a\n", id="trailing-newline"),
        pytest.param("slurm-a\x00", id="nul"),
        pytest.param("slurm-" + "a" * 65, id="65-chars"),
        pytest.param("slurm-" + "a" * 300, id="300-chars"),
        pytest.param("slurm-é", id="non-ascii"),
        pytest.param("slurm-\uff41", id="fullwidth"),
        pytest.param("slurm-\u0661", id="arabic-digit"),
        pytest.param("Slurm-debug", id="wrong-case-prefix"),
        pytest.param("slurmdebug", id="no-dash"),
        pytest.param("hpc-debug", id="wrong-prefix"),
        pytest.param("debug", id="bare-name"),
    ],
)
def test_profile_name_refuses(alias: str) -> None:
    with pytest.raises(BadAlias) as info:
        config.profile_name(alias)
    assert info.value.alias == alias
    assert len(str(info.value)) < 250  # a 300-character alias is cut short in the message


def test_profile_name_with_custom_prefix() -> None:
    assert config.profile_name("hpc-gpu", "hpc-") == "gpu"
    with pytest.raises(BadAlias):
        config.profile_name("slurm-gpu", "hpc-")


@pytest.mark.parametrize("name", ["debug", "a", "a" * 64, "gpu-a100_x.2"])
def test_check_name_accepts(name: str) -> None:
    config.check_name(name, "profile name")


@pytest.mark.parametrize("name", ["", "a" * 65, "-x", ".x", "a;b", "a b", "é", "a\n", "$(id)"])
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(BadAlias):
        config.check_name(name, "profile name")


@given(st.one_of(st.text(), st.text().map(lambda s: "slurm-" + s),
                 st.from_regex(r"slurm-[A-Za-z0-9][A-Za-z0-9_.-]{0,70}", fullmatch=True)))
def test_profile_name_property(alias: str) -> None:
    try:
        name = config.profile_name(alias)
    except BadAlias:
        return
    assert alias == "slurm-" + name
    assert name.isascii()
    assert 1 <= len(name) <= 64
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)


# --- loading: good files ----------------------------------------------------------------------

def test_load_the_module_docstring_example(tmp_path: Path) -> None:
    assert config.__doc__ is not None
    example = config.__doc__.split("\n\n", 1)[1]
    cfg = config.load(write(tmp_path, example))
    assert cfg.prefix == "slurm-"
    hpc = Cluster(name="hpc", login="hpc", mode="adopt", backend="openssh", login_shell=True)
    assert cfg.clusters == {"hpc": hpc}
    assert cfg.profiles == {
        "gpu2": Profile(name="gpu2", cluster=hpc, partition="gpu", gres="gpu:2",
                        time="8:00:00"),
    }
    assert cfg.path == tmp_path / "config.toml"


def test_defaults_are_inherited_and_overridden(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, CLUSTER + """\
        [defaults]
        time = "8:00:00"
        cpus = 4
        account = "proj1"
        pending_timeout = "30:00"
        idle_timeout = 0
        sbatch_args = ["--exclusive"]
        [profiles.small]
        [profiles.big]
        cpus = 64
        sbatch_args = []
        """))
    small, big = cfg.profiles["small"], cfg.profiles["big"]
    assert (small.time, small.cpus, small.account) == ("8:00:00", 4, "proj1")
    assert (big.time, big.cpus, big.account) == ("8:00:00", 64, "proj1")
    assert small.pending_timeout == big.pending_timeout == 1800
    assert small.idle_timeout == 0
    assert small.idle_check == 60  # the dataclass default
    assert small.sbatch_args == ("--exclusive",)
    assert big.sbatch_args == ()


def test_one_cluster_is_implicit(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, CLUSTER + "[profiles.debug]\n"))
    assert cfg.profiles["debug"].cluster == Cluster(name="hpc", login="hpc")
    assert cfg.profiles["debug"].key == "hpc.debug"


def test_several_clusters_each_profile_names_one(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, """\
        prefix = "hpc-"
        [clusters.a]
        login = "user@login-a.example.org"
        [clusters.b]
        login = "login-b"
        [profiles.x]
        cluster = "a"
        [profiles.y]
        cluster = "b"
        """))
    assert cfg.prefix == "hpc-"
    assert cfg.profiles["x"].cluster.login == "user@login-a.example.org"
    assert cfg.profiles["y"].key == "b.y"
    assert cfg.profile_for_alias("hpc-y") is cfg.profiles["y"]


@pytest.mark.parametrize(
    "value", ["x;touch$(id)", "`id`", "a|b&c", "$HOME", "x>y", "'q'", '"dq"', "gpu,debug"],
)
def test_partition_with_shell_metacharacters_is_accepted(tmp_path: Path, value: str) -> None:
    # Never run through a local shell; Login.run quotes it, and sbatch refuses such a partition.
    cfg = config.load(write(tmp_path, CLUSTER + "[profiles.p]\npartition = '''" + value + "'''\n"))
    assert f"--partition={value}" in cfg.profiles["p"].sbatch_options()


def test_sbatch_options_content() -> None:
    profile = Profile(
        name="gpu", cluster=Cluster("hpc", "hpc"), partition="gpu", account="proj", qos="high",
        reservation="res1", constraint="a100&ib", gres="gpu:a100:1", gpus="a100:2", cpus=8,
        mem="32G", time="1-00:00:00", sbatch_args=("--exclusive", "--mail-type=END"),
    )
    assert profile.sbatch_options() == [
        "--nodes=1", "--ntasks=1", "--partition=gpu", "--account=proj", "--qos=high",
        "--reservation=res1", "--constraint=a100&ib", "--gres=gpu:a100:1", "--gpus=a100:2",
        "--cpus-per-task=8", "--mem=32G", "--time=1-00:00:00", "--exclusive", "--mail-type=END",
    ]


def test_sbatch_options_minimal() -> None:
    assert Profile(name="d", cluster=Cluster("c", "c")).sbatch_options() == ["--nodes=1", "--ntasks=1"]


# --- profiles by alias / name -----------------------------------------------------------------

@pytest.fixture
def two_profiles(tmp_path: Path) -> config.Config:
    return config.load(write(tmp_path, CLUSTER + "[profiles.gpu]\n[profiles.debug]\n"))


def test_profile_for_alias(two_profiles: config.Config) -> None:
    assert two_profiles.profile_for_alias("slurm-gpu").name == "gpu"
    assert two_profiles.profile("debug").name == "debug"


def test_unknown_profile_lists_the_known_ones(two_profiles: config.Config) -> None:
    with pytest.raises(UnknownProfile) as info:
        two_profiles.profile_for_alias("slurm-cpu")
    assert info.value.name == "cpu"
    assert info.value.known == ("debug", "gpu")
    assert "debug, gpu" in str(info.value)
    assert str(two_profiles.path) in str(info.value)


@pytest.mark.parametrize("alias", ["slurm-a;b", "other-gpu", "slurm-"])
def test_profile_for_bad_alias(two_profiles: config.Config, alias: str) -> None:
    with pytest.raises(BadAlias):
        two_profiles.profile_for_alias(alias)


def test_profile_by_bad_name(two_profiles: config.Config) -> None:
    with pytest.raises(BadAlias):
        two_profiles.profile("../gpu")
    with pytest.raises(UnknownProfile):
        two_profiles.profile("cpu")


# --- loading: bad files, with the line at fault -----------------------------------------------

BAD_VALUES = [
    # (id, profile body line, text expected in the message)
    ("cpus-negative", "cpus = -1", "cpus = -1"),
    ("cpus-zero", "cpus = 0", "cpus = 0"),
    ("cpus-bool", "cpus = true", "cpus = true"),
    ("cpus-string", 'cpus = "4"', 'cpus = "4"'),
    ("cpus-float", "cpus = 4.5", "cpus = 4.5"),
    ("cpus-huge", "cpus = 100001", "expected a whole number"),
    ("mem-lots", 'mem = "lots"', 'mem = "lots"'),
    ("mem-space", 'mem = "32 G"', "mem"),
    ("mem-int", "mem = 32", "mem = 32"),
    ("time-soon", 'time = "soon"', 'time = "soon"'),
    ("time-zero", 'time = "0"', "time"),
    ("time-unlimited", 'time = "UNLIMITED"', "time"),
    ("time-int", "time = 60", "time"),
    ("partition-option", 'partition = "-x"', "partition"),
    ("partition-empty", 'partition = ""', "partition"),
    ("partition-newline", 'partition = "gpu\\ntouch /tmp/pwned"', "partition"),
    ("partition-cr", 'partition = "gpu\\r"', "partition"),
    ("partition-tab", 'partition = "gpu\\tx"', "partition"),
    ("partition-nul", 'partition = "gpu\\u0000"', "partition"),
    ("partition-space", 'partition = "x; touch /tmp/pwned"', "partition"),
    ("account-list", 'account = ["a"]', "account"),
    ("gres-semicolon", 'gres = "gpu:2;x"', "gres"),
    ("gpus-comma", 'gpus = "2,3"', "gpus"),
    ("wrap", 'sbatch_args = ["--wrap=rm -rf ~"]', "--wrap is set by slurm-proxy"),
    ("wrap-prefix", 'sbatch_args = ["--wra=x"]', "--wrap is set by slurm-proxy"),
    ("job-name", 'sbatch_args = ["--job-name=x"]', "--job-name is set by slurm-proxy"),
    ("output", 'sbatch_args = ["--output=/tmp/x"]', "--output is set by slurm-proxy"),
    ("export-file-prefix", 'sbatch_args = ["--export-f=x"]', "--export-file is set"),
    ("short-option", 'sbatch_args = ["-J", "x"]', "one long option"),
    ("split-option", 'sbatch_args = ["--partition", "gpu"]', "one long option"),
    ("upper-case", 'sbatch_args = ["--WRAP=x"]', "one long option"),
    ("newline", 'sbatch_args = ["--mail-type=ALL\\n--wrap=x"]', "control characters"),
    ("newline-only-value", 'sbatch_args = ["--comment=a\\nb"]', "control characters"),
    ("not-a-list", 'sbatch_args = "--exclusive"', "sbatch_args must be a list"),
    ("list-of-ints", "sbatch_args = [1]", "sbatch_args must be a list"),
    ("pending-negative", "pending_timeout = -1", "pending_timeout = -1"),
    ("pending-bool", "pending_timeout = true", "pending_timeout"),
    ("pending-float", "pending_timeout = 1.5", "pending_timeout"),
    ("pending-soon", 'pending_timeout = "soon"', "pending_timeout"),
    ("pending-over-a-year", "pending_timeout = 31622401", "pending_timeout"),
    ("idle-check-unlimited", 'idle_check = "UNLIMITED"', "idle_check"),
    ("unknown-key", 'colour = "red"', "unknown key 'colour'"),
    ("typo", "cpu = 4", "unknown key 'cpu'"),
    ("cluster-int", "cluster = 1", "cluster must be a string"),
    ("cluster-unknown", 'cluster = "nope"', "unknown cluster 'nope'"),
    ("mode-unknown", 'mode = "rsh"', 'mode = "rsh": expected "adopt" or "sshd" or "srun"'),
    ("mode-list", 'mode = ["srun"]', "mode"),
]


@pytest.mark.parametrize(("body", "message"), [pytest.param(b, m, id=i) for i, b, m in BAD_VALUES])
def test_bad_profile_value_points_at_its_line(tmp_path: Path, body: str, message: str) -> None:
    text = CLUSTER + "[profiles.other]\ncpus = 2\n[profiles.p]\nqos = \"normal\"\n" + body + "\n"
    error = load_error(tmp_path, text)
    assert message in error.problem
    assert error.line == line_of(text, body)
    assert f"{tmp_path / 'config.toml'}:{error.line}: " in str(error)


@pytest.mark.parametrize(("body", "message"), [pytest.param(b, m, id=i) for i, b, m in BAD_VALUES
                                                if not b.startswith("cluster")])
def test_bad_default_value_points_at_its_line(tmp_path: Path, body: str, message: str) -> None:
    text = CLUSTER + "[defaults]\n" + body + "\n[profiles.p]\n"
    error = load_error(tmp_path, text)
    assert message in error.problem
    assert error.line == line_of(text, body)


BAD_FILES = [
    # (id, file, needle on the expected line or None for no line, text expected in the message)
    ("unknown-top-level-key", 'colour = "red"\n' + CLUSTER + "[profiles.p]\n", "colour",
     "unknown key 'colour'"),
    ("bad-prefix", 'prefix = "slurm proxy"\n' + CLUSTER + "[profiles.p]\n", "prefix", "prefix must be"),
    ("prefix-not-string", "prefix = 1\n" + CLUSTER + "[profiles.p]\n", "prefix", "prefix must be"),
    ("cluster-unknown-key", CLUSTER + "port = 22\n[profiles.p]\n", "port", "unknown key 'port'"),
    ("cluster-no-login", "[clusters.hpc]\n[profiles.p]\n", "[clusters.hpc]", "needs login"),
    ("login-option", '[clusters.hpc]\nlogin = "-oProxyCommand=x"\n[profiles.p]\n', "login", "needs login"),
    ("login-shell", '[clusters.hpc]\nlogin = "hpc; rm -rf ~"\n[profiles.p]\n', "login", "needs login"),
    ("login-int", "[clusters.hpc]\nlogin = 1\n[profiles.p]\n", "login", "needs login"),
    ("cluster-bad-name", '[clusters."a;b"]\nlogin = "x"\n[profiles.p]\n', "[clusters", "cluster name"),
    ("profile-bad-name", CLUSTER + '[profiles."$(id)"]\n', "[profiles", "profile name"),
    ("profile-long-name", CLUSTER + "[profiles." + "a" * 65 + "]\n", "[profiles", "profile name"),
    ("cluster-in-defaults", CLUSTER + '[defaults]\ncluster = "hpc"\n[profiles.p]\n', "cluster =",
     "cluster belongs in a profile"),
    ("needs-cluster", '[clusters.a]\nlogin = "a"\n[clusters.b]\nlogin = "b"\n[profiles.p]\ncpus = 1\n',
     "[profiles.p]", "needs cluster = one of a, b"),
    ("no-clusters", "[profiles.p]\n", None, "no [clusters.NAME] table"),
    ("no-profiles", CLUSTER, None, "no [profiles.NAME] table"),
    ("clusters-not-table", "clusters = 5\n[profiles.p]\n", "clusters", "clusters must be a table"),
    ("profile-not-table", CLUSTER + "[profiles]\np = 3\n", None, "[profiles.p] must be a table"),
    ("cluster-mode", '[clusters.a]\nlogin = "a"\nmode = "ssh"\n[profiles.p]\n', "mode =",
     'mode = "ssh": expected "adopt" or "sshd" or "srun"'),
    ("cluster-backend", '[clusters.a]\nlogin = "a"\nbackend = "putty"\n[profiles.p]\n', "backend =",
     'expected "openssh" or "paramiko" or "agent"'),
    ("cluster-agent-idle", '[clusters.a]\nlogin = "a"\nagent_idle = -1\n[profiles.p]\n', "agent_idle =",
     "agent_idle = -1: expected seconds"),
    ("cluster-agent-idle-zero", '[clusters.a]\nlogin = "a"\nagent_idle = 0\n[profiles.p]\n', "agent_idle =",
     "agent_idle = 0: the agent needs at least 1 second"),
    ("cluster-keyscan", '[clusters.a]\nlogin = "a"\nkeyscan = "yes"\n[profiles.p]\n', "keyscan =",
     'keyscan = "yes": expected true or false'),
    ("cluster-unknown-key", '[clusters.a]\nlogin = "a"\npartition = "x"\n[profiles.p]\n', "partition =",
     "unknown key 'partition' in [clusters.a] (known: login, mode, backend, keyscan, login_shell, "
     "agent_idle)"),
    ("same-key-other-table", CLUSTER + "[defaults]\ncpus = 4\n[profiles.p]\ncpus = 0\n", "cpus = 0",
     "cpus = 0"),
]


@pytest.mark.parametrize(("text", "needle", "message"),
                         [pytest.param(t, n, m, id=i) for i, t, n, m in BAD_FILES])
def test_bad_file_points_at_its_line(tmp_path: Path, text: str, needle: str | None, message: str) -> None:
    error = load_error(tmp_path, text)
    assert message in error.problem
    if needle is None:
        assert error.line is None
        assert str(error).startswith(f"{tmp_path / 'config.toml'}: ")
    else:
        assert error.line == line_of(text, needle)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param(CLUSTER + "[profiles.p]   # the GPU partition\ncpus = -1\n", "cpus = -1",
                     id="comment-after-profile-header"),
        pytest.param("[clusters.hpc]  # our cluster\nport = 22\n[profiles.p]\n", "port = 22",
                     id="comment-after-cluster-header"),
        pytest.param(CLUSTER + "[profile.p]\ncpus = 1\n", "[profile.p]", id="misspelt-table"),
        pytest.param(CLUSTER + '[profiles."a b"]\n', "[profiles", id="space-in-table-name"),
    ],
)
def test_error_line_found_for_common_layouts(tmp_path: Path, text: str, needle: str) -> None:
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, needle)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param(CLUSTER + '[profiles.p]\npartition = "gpu\n', "partition", id="unterminated-string"),
        pytest.param(CLUSTER + "[profiles.p]\ncpus = \n", "cpus", id="missing-value"),
        pytest.param(CLUSTER + "[profiles.p]\ncpus = 1\ncpus = 2\n", "cpus = 2", id="duplicate-key"),
        pytest.param(CLUSTER + "[profiles.p\n", "[profiles.p", id="unclosed-header"),
        pytest.param("[clusters.hpc]\nlogin = hpc\n", "login", id="bare-word"),
    ],
)
def test_malformed_toml_points_at_its_line(tmp_path: Path, text: str, needle: str) -> None:
    error = load_error(tmp_path, text)
    assert error.problem.startswith("invalid TOML: ")
    assert "(at line" not in error.problem
    assert error.line == line_of(text, needle)
    assert f"config.toml:{error.line}: invalid TOML" in str(error)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert "no configuration file" in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load()
    assert info.value.path == tmp_path / "no-such-config.toml"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[clusters.hpc]\nlogin = \"h\xffpc\"\n")
    with pytest.raises(ConfigError, match=r"config.toml:2: not UTF-8 text \(byte 0xff\)"):
        config.load(path)


def test_load_uses_slurm_proxy_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, CLUSTER + "[profiles.p]\n")
    monkeypatch.setenv("SLURM_PROXY_CONFIG", str(path))
    assert config.config_path() == path
    assert list(config.load().profiles) == ["p"]


def test_config_path_defaults_to_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_PROXY_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.config_path() == tmp_path / "xdg" / "slurm-proxy" / "config.toml"


def test_empty_prefix_is_refused(tmp_path: Path) -> None:
    load_error(tmp_path, 'prefix = ""\n' + CLUSTER + "[profiles.p]\n")


GOOD = '[clusters.c]\nlogin = "hpc"\n[profiles.p]\ncpus = 1\n'


def private_config(tmp_path: Path) -> Path:
    d = tmp_path / "cfg"
    d.mkdir(mode=0o700)
    path = d / "config.toml"
    path.write_text(GOOD)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(("target", "mode"), [("file", 0o666), ("file", 0o620), ("directory", 0o777),
                                              ("directory", 0o770)],
                         ids=["file-world", "file-group", "dir-world", "dir-group"])
def test_a_config_others_can_change_is_refused(tmp_path: Path, target: str, mode: int) -> None:
    path = private_config(tmp_path)
    changed = path if target == "file" else path.parent
    changed.chmod(mode)
    with pytest.raises(ConfigError, match=f"writable by others; run: chmod go-w {changed}$"):
        config.load(path)


def test_a_file_of_ones_own_in_a_sticky_shared_directory_is_fine(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    path = shared / "config.toml"
    path.write_text(GOOD)
    assert config.load(path).profiles["p"].cpus == 1


def test_a_symlinked_config_is_judged_where_it_points(tmp_path: Path) -> None:
    target = private_config(tmp_path)
    target.parent.chmod(0o777)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=f"directory {target.parent} is writable by others"):
        config.load(link)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_config_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = private_config(tmp_path)
    assert config_file.unsafe_path(path, uid=os.getuid(), home=tmp_path) == ""
    os.chown(path, 4242, 4242)  # someone else's file, not root's
    problem = config_file.unsafe_path(path, uid=os.getuid(), home=tmp_path)
    assert "belongs to another user (uid 4242)" in problem
    with pytest.raises(ConfigError, match="belongs to another user"):
        config.load(path)


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        config.load(fifo)


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = private_config(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert "p" in config.load(path).profiles


def test_a_latin1_byte_names_its_line(tmp_path: Path) -> None:
    path = private_config(tmp_path)
    path.write_bytes(GOOD.encode() + b'mem = "4G" # caf\xe9\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.line == 5 and "not UTF-8" in str(info.value) and "0xe9" in str(info.value)


def test_toml_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    path = private_config(tmp_path)
    path.write_text("x = " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        config.load(path)


@pytest.mark.parametrize("arg", ["--export=NONE", "--export=ALL,FOO=bar", "--exclusive"])
def test_real_sbatch_options_that_look_like_owned_abbreviations_are_accepted(tmp_path: Path,
                                                                             arg: str) -> None:
    cfg = config.load(write(tmp_path, CLUSTER + f'[profiles.p]\nsbatch_args = ["{arg}"]\n'))
    assert cfg.profiles["p"].sbatch_args == (arg,)


@pytest.mark.parametrize("arg", ["--export-file=x", "--export-f=x", "--out=x", "--job=x", "--wra=x"])
def test_owned_options_and_their_abbreviations_are_refused(tmp_path: Path, arg: str) -> None:
    load_error(tmp_path, CLUSTER + f'[profiles.p]\nsbatch_args = ["{arg}"]\n')


def test_the_bundled_example_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "contrib" / "examples" / "config.toml"
    cfg = config.load(example)
    assert sorted(cfg.profiles) == ["a100", "cpu", "gpu1"]
    assert cfg.clusters["hpc"].mode == "adopt" and cfg.clusters["hpc"].backend == "openssh"


def test_mode_comes_from_the_cluster_unless_the_profile_sets_one(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, """\
        [clusters.a]
        login = "a"
        mode = "srun"
        backend = "agent"
        keyscan = true
        agent_idle = "5:00"
        [profiles.inherits]
        [profiles.own]
        mode = "sshd"
        """))
    assert cfg.clusters["a"] == Cluster("a", "a", mode="srun", backend="agent", keyscan=True, agent_idle=300)
    assert cfg.profiles["inherits"].mode == "srun" and cfg.profiles["own"].mode == "sshd"


@pytest.mark.parametrize(("value", "shown"), [("true", "cpus = true:"), ('"4"', 'cpus = "4":'),
                                              ("[1]", "cpus = [1]:"), ("2.5", "cpus = 2.5:")])
def test_messages_spell_values_as_toml(tmp_path: Path, value: str, shown: str) -> None:
    assert shown in str(load_error(tmp_path, CLUSTER + f"[profiles.p]\ncpus = {value}\n"))
