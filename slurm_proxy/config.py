"""The TOML configuration: clusters and profiles as immutable records, validated with file:line.

    prefix = "slurm-"            # optional: the alias prefix in ~/.ssh/config
    [defaults]                   # optional: inherited by every profile
    time = "8:00:00"
    [clusters.hpc]
    login = "hpc"                # an ssh destination; ~/.ssh/config applies to it
    mode = "adopt"               # or "sshd", "srun" (a profile may set its own)
    backend = "openssh"          # or "paramiko", "agent"
    login_shell = true           # optional: Slurm is on PATH only in a login shell there
    [profiles.gpu2]
    cluster = "hpc"              # optional when there is one cluster
    partition = "gpu"
    gres = "gpu:2"
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, NamedTuple

from . import config_file, paths
from .defaults import AGENT_IDLE
from .errors import BadAlias, ConfigError, UnknownProfile
from .slurm import parse_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib

DEFAULT_PREFIX = "slurm-"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME = 64

# sbatch options the tool owns: a profile may not set them through sbatch_args. sbatch accepts
# any unambiguous prefix of a long option, so a prefix of one of these is refused too.
OWNED_SBATCH_OPTIONS = (
    "wrap", "job-name", "comment", "output", "error", "input", "parsable", "array", "wait",
    "test-only", "uid", "gid", "export-file", "batch",
)
# sbatch's own long options that are prefixes of owned ones: full names, not abbreviations.
SBATCH_PREFIX_OPTIONS = ("export",)


MODES = ("adopt", "sshd", "srun")
BACKENDS = ("openssh", "paramiko", "agent")


class Cluster(NamedTuple):
    name: str
    login: str
    mode: str = "adopt"  # how a session reaches the job: see MODES
    backend: str = ""  # how slurm-proxy reaches the login node; "" = openssh (Windows: agent)
    agent_idle: int = AGENT_IDLE  # seconds the agent keeps a login that no connect uses
    keyscan: bool = False  # ask ssh-keyscan on the login node when it knows no key for a node
    # Slurm's commands need a login shell's PATH (/etc/profile); None: found out when one is
    # "not found", and remembered
    login_shell: bool | None = None


class Profile(NamedTuple):
    name: str
    cluster: Cluster
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    gres: str | None = None
    gpus: str | None = None
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None
    sbatch_args: tuple[str, ...] = ()
    pending_timeout: int = 600  # seconds to wait for a queued job before giving up
    idle_timeout: int = 1800  # seconds without an ssh session before the job ends; 0 = never
    idle_check: int = 60  # seconds between idle checks in the job
    mode: str = "adopt"  # the cluster's mode unless the profile sets its own
    setup: tuple[str, ...] = ()  # shell lines run at the start of every session, on the node
    container: str | None = None  # every session runs inside this image
    container_args: tuple[str, ...] = ()  # the runtime's options (e.g. --nv, --bind /scratch)
    container_runtime: tuple[str, ...] = ()  # an argv template with {image} and {args}
    warn_before: int = 600  # seconds before the time limit to warn on connect and in sessions
    renew_before: int = 0  # seconds before the time limit to submit the successor; 0 = never

    @property
    def key(self) -> str:
        """Names this profile's job in the local state and its lock."""
        return f"{self.cluster.name}.{self.name}"

    def sbatch_options(self) -> list[str]:
        opts = [f"--{flag}={value}" for flag, value in (
            ("partition", self.partition), ("account", self.account), ("qos", self.qos),
            ("reservation", self.reservation), ("constraint", self.constraint),
            ("gres", self.gres), ("gpus", self.gpus), ("cpus-per-task", self.cpus),
            ("mem", self.mem), ("time", self.time),
        ) if value is not None]
        return ["--nodes=1", "--ntasks=1", *opts, *self.sbatch_args]


class Config(NamedTuple):
    path: Path
    prefix: str
    clusters: dict[str, Cluster]
    profiles: dict[str, Profile]

    def profile_for_alias(self, alias: str) -> Profile:
        return self.profile(profile_name(alias, self.prefix))

    def profile(self, name: str) -> Profile:
        check_name(name, "profile name")
        try:
            return self.profiles[name]
        except KeyError:
            raise UnknownProfile(name, sorted(self.profiles), self.path) from None


LOGIN_RE = re.compile(r"[A-Za-z0-9_.@:\[\]%+-]+")


def valid_login(login: object) -> bool:
    """An ssh destination: a host, user@host or ~/.ssh/config alias, never an option."""
    return isinstance(login, str) and bool(LOGIN_RE.fullmatch(login)) and not login.startswith("-")


def profile_name(alias: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``slurm-gpu2`` → ``gpu2``; anything that is not prefix + a plain name is refused."""
    if not alias.startswith(prefix):
        raise BadAlias(alias, f"expected {prefix}<profile>")
    check_name(alias[len(prefix):], "profile name", alias)
    return alias[len(prefix):]


def check_name(name: str, what: str, shown: str | None = None) -> None:
    shown = name if shown is None else shown
    if not name:
        raise BadAlias(shown, f"empty {what}")
    if len(name) > MAX_NAME:
        raise BadAlias(shown, f"{what} longer than {MAX_NAME} characters")
    if not NAME_RE.fullmatch(name) or not name.isascii():
        raise BadAlias(shown, f"{what} may hold only letters, digits, '_', '.', '-' "
                              "and must start with a letter or digit")


def config_path() -> Path:
    env = os.environ.get("SLURM_PROXY_CONFIG")
    if env:
        return Path(env).expanduser()
    return paths.user_dir("config") / "slurm-proxy" / "config.toml"


def load(path: Path | None = None) -> Config:
    path = path or config_path()
    data = config_file.read(path)
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # a BOM: Notepad writes one
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(path, f"not UTF-8 text (byte {data[e.start]:#04x}); save the file as UTF-8",
                          line) from None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise ConfigError(path, f"invalid TOML: {msg}", int(m.group(1)) if m else None) from None
    except RecursionError:
        raise ConfigError(path, "invalid TOML: nested too deeply") from None
    return _Reader(path, text).config(parsed)


# --- validation -------------------------------------------------------------------------------

_NO_CONTROL = re.compile(r"[^\x00-\x1f\x7f]+")


def _word(value: str) -> bool:
    """A Slurm name or expression: printable, no spaces, not an option."""
    return bool(_NO_CONTROL.fullmatch(value)) and " " not in value and not value.startswith("-")


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), " or ".join(json.dumps(c) for c in choices)


_VALUE_CHECKS: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "partition": (str, _word, "a partition name"),
    "account": (str, _word, "an account name"),
    "qos": (str, _word, "a QOS name"),
    "reservation": (str, _word, "a reservation name"),
    "constraint": (str, _word, "a constraint expression"),
    "gres": (str, lambda v: bool(re.fullmatch(r"[A-Za-z0-9_:,.()-]+", v)), "like gpu:2 or gpu:a100:1"),
    "gpus": (str, lambda v: bool(re.fullmatch(r"[A-Za-z0-9_:]+", v)), "like 2 or a100:2"),
    "cpus": (int, lambda v: 1 <= v <= 100_000, "a whole number from 1 to 100000"),
    "mem": (str, lambda v: bool(re.fullmatch(r"\d{1,9}[KMGT]?", v)), "like 32G or 4000M"),
    "time": (str, lambda v: _duration_ok(v, allow_zero=False), "a Slurm time like 8:00:00 or 1-00:00:00"),
    "mode": (str, *_one_of(MODES)),
    "container": (str, lambda v: bool(v) and bool(_NO_CONTROL.fullmatch(v)), "an image path"),
}
_SECONDS = ("pending_timeout", "idle_timeout", "idle_check", "warn_before", "renew_before")
# Lists of free text that reach the compute node only as data (never a shell on the laptop or the
# login node): one line each, no control characters but tabs.
_LINES = ("setup", "container_args", "container_runtime")
_LINE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_CLUSTER_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "login": (valid_login, "an ssh destination"),
    "mode": _one_of(MODES),
    "backend": _one_of(BACKENDS),
    "keyscan": (lambda v: isinstance(v, bool), "true or false"),
    "login_shell": (lambda v: isinstance(v, bool), "true or false"),
    "agent_idle": ((lambda v: True), "seconds"),  # read by _Reader.seconds
}


def _toml(value: Any) -> str:
    """A value as it is spelled in TOML (``true``, ``"x"``), for messages about the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)[:80]
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{…}"
    return str(value)


def _duration_ok(value: str, allow_zero: bool) -> bool:
    try:
        seconds = parse_duration(value)
    except Exception:
        return False
    return seconds is not None and (allow_zero or seconds > 0)


def _sbatch_arg_problem(arg: str) -> str | None:
    if not _NO_CONTROL.fullmatch(arg):
        return "control characters are not allowed"
    m = re.fullmatch(r"--([a-z][a-z0-9-]*)(=.*)?", arg, re.S)
    if not m:
        return "each entry must be one long option, --name or --name=value"
    name = m.group(1)
    if name in SBATCH_PREFIX_OPTIONS:
        return None
    for owned in OWNED_SBATCH_OPTIONS:
        if owned.startswith(name):
            return f"--{owned} is set by slurm-proxy itself"
    return None


class _Reader:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def error(self, problem: str, table: str | None = None, key: str | None = None) -> ConfigError:
        return ConfigError(self.path, problem, self._line_of(table, key))

    def _line_of(self, table: str | None, key: str | None) -> int | None:
        """Best effort: the line of ``key`` inside ``[table]`` (or of the header itself)."""
        in_table = table is None
        found = None
        for n, line in enumerate(self.lines, 1):
            s = line.strip()
            if s.startswith("["):
                m = re.match(r"\[\[?([^\]]*)\]", s)  # "[ profiles . 'a b' ]  # comment"
                header = ".".join(part.strip().strip("\"'") for part in (m.group(1) if m else "").split("."))
                if table is None and key is not None and header.split(".")[0] == key:
                    return n  # an unknown top-level table such as [profile.x]
                in_table = table is not None and header == table
                if in_table and key is None:
                    return n
                if in_table and found is None:
                    found = n
            elif in_table and key is not None and re.match(rf"{re.escape(key)}\s*=", s):
                return n
        return found

    def table(self, data: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(f"{key} must be a table", where, key)
        return value

    def config(self, data: dict[str, Any]) -> Config:
        for key in data:
            if key not in ("prefix", "defaults", "clusters", "profiles"):
                raise self.error(f"unknown key {key!r} (expected prefix, [defaults], "
                                 "[clusters.NAME], [profiles.NAME])", None, key)
        prefix = data.get("prefix", DEFAULT_PREFIX)
        # Never empty: the Host block would become `Host *`, sending every ssh through here.
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", prefix):
            raise self.error("prefix must be 1 to 32 letters, digits, '_', '.', '-'", None, "prefix")

        clusters = {}
        for name, body, where in self.named_tables(data, "clusters", "cluster"):
            for key, value in body.items():
                expect = _CLUSTER_KEYS.get(key)
                if expect is None:
                    raise self.error(f"unknown key {key!r} in [{where}] (known: "
                                     f"{', '.join(_CLUSTER_KEYS)})", where, key)
                if key not in ("login", "agent_idle") and not expect[0](value):
                    raise self.error(f"{key} = {_toml(value)}: expected {expect[1]}", where, key)
            login = body.get("login")
            if not valid_login(login):
                raise self.error(f"[{where}] needs login = \"<ssh destination>\" "
                                 "(a host name or ~/.ssh/config alias)", where, "login")
            agent_idle = self.seconds(body.get("agent_idle", AGENT_IDLE), where, "agent_idle")
            if agent_idle < 1:
                raise self.error("agent_idle = 0: the agent needs at least 1 second", where, "agent_idle")
            clusters[name] = Cluster(name=name, login=str(login), mode=body.get("mode", "adopt"),
                                     backend=body.get("backend", ""),
                                     keyscan=body.get("keyscan", False), agent_idle=agent_idle,
                                     login_shell=body.get("login_shell"))
        if not clusters:
            raise self.error("no [clusters.NAME] table with a login host")

        defaults = self.profile_values(self.table(data, "defaults"), "defaults")
        if "cluster" in defaults:
            raise self.error("cluster belongs in a profile, not in [defaults]", "defaults", "cluster")
        profiles = {}
        for name, body, where in self.named_tables(data, "profiles", "profile"):
            values = {**defaults, **self.profile_values(body, where)}
            cluster_name = values.pop("cluster", None)
            if cluster_name is None:
                if len(clusters) > 1:
                    raise self.error(f"[{where}] needs cluster = one of {', '.join(clusters)}", where)
                cluster_name = next(iter(clusters))
            if cluster_name not in clusters:
                raise self.error(f"unknown cluster {cluster_name!r} (configured: "
                                 f"{', '.join(clusters)})", where, "cluster")
            values.setdefault("mode", clusters[cluster_name].mode)
            profiles[name] = Profile(name=name, cluster=clusters[cluster_name], **values)
        if not profiles:
            raise self.error("no [profiles.NAME] table")
        return Config(path=self.path, prefix=prefix, clusters=clusters, profiles=profiles)

    def named_tables(self, data: dict[str, Any], key: str,
                     what: str) -> Iterator[tuple[str, dict[str, Any], str]]:
        """``[key.NAME]`` tables as (NAME, body, "key.NAME"), each name and body checked."""
        for name, body in self.table(data, key).items():
            where = f"{key}.{name}"
            try:
                check_name(name, f"{what} name")
            except BadAlias as e:
                raise self.error(f"{what} name {name!r}: {e.reason}", where) from None
            if not isinstance(body, dict):
                raise self.error(f"[{where}] must be a table", where)
            yield name, body, where

    def profile_values(self, body: dict[str, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key == "cluster":
                if not isinstance(value, str):
                    raise self.error("cluster must be a string", where, key)
                out[key] = value
            elif key in _VALUE_CHECKS:
                typ, ok, expect = _VALUE_CHECKS[key]
                if (typ is int and isinstance(value, bool)) or not isinstance(value, typ) or not ok(value):
                    raise self.error(f"{key} = {_toml(value)}: expected {expect}", where, key)
                out[key] = value
            elif key in _SECONDS:
                out[key] = self.seconds(value, where, key)
            elif key in _LINES:
                if not isinstance(value, list) or not all(isinstance(a, str) and _LINE.fullmatch(a)
                                                          for a in value):
                    raise self.error(f"{key} must be a list of strings, one line each", where, key)
                out[key] = tuple(value)
            elif key == "sbatch_args":
                if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                    raise self.error("sbatch_args must be a list of strings", where, key)
                for arg in value:
                    problem = _sbatch_arg_problem(arg)
                    if problem:
                        raise self.error(f"sbatch_args entry {arg[:60]!r}: {problem}", where, key)
                out[key] = tuple(value)
            else:
                known = ", ".join(["cluster", *_VALUE_CHECKS, *_SECONDS, *_LINES, "sbatch_args"])
                raise self.error(f"unknown key {key!r} in [{where}] (known: {known})", where, key)
        return out

    def seconds(self, value: Any, where: str, key: str) -> int:
        """Seconds as a whole number, or a Slurm time string ("30:00" is 30 minutes)."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 366 * 86400:
            return value
        if isinstance(value, str) and _duration_ok(value, allow_zero=True):
            return parse_duration(value) or 0
        raise self.error(f"{key} = {_toml(value)}: expected seconds (a whole number >= 0) or a "
                         "Slurm time like \"30:00\"", where, key)
