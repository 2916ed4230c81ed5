"""Stand-ins shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from slurm_proxy import slurm
from slurm_proxy.login import Result, ssh_config


def target(**kw: object) -> ssh_config.Target:
    base: dict[str, object] = dict(
        name="testlogin", host="127.0.0.1", port=2222, user="u", identity_files=(), identities_only=False,
        known_hosts_files=(), host_key_alias=None, proxy_command=None, proxy_jump=(), connect_timeout=None,
        keepalive=0)
    base.update(kw)
    return ssh_config.Target(**base)  # type: ignore[arg-type]


def command_name(argv: Sequence[str]) -> str:
    """The command ``argv`` runs: a Slurm command's own name, under its neutral environment."""
    wrapper = slurm.neutral([])
    if list(argv[:len(wrapper)]) == wrapper and len(argv) > len(wrapper):
        return argv[len(wrapper)]
    return argv[0]


class FakeLogin:
    """Records every argv; answers from per-command queues (the last answer repeats)."""

    destination = "hpc"
    logs_in_per_command = False

    def __init__(self, **answers: Sequence[Result] | Callable[[list[str]], Result]) -> None:
        self.answers = {cmd: a if callable(a) else list(a) for cmd, a in answers.items()}
        self.calls: list[list[str]] = []
        self.refuses_forwarding = ""  # what forwarding_refused answers
        self.probes: list[str] = []  # the forwards it was asked to try
        self.stdin: dict[int, str | None] = {}

    def run(self, argv: Sequence[str], stdin: str | None = None) -> Result:
        argv = list(argv)
        self.stdin[len(self.calls)] = stdin
        self.calls.append(argv)
        answer = self.answers.get(command_name(argv))
        if answer is None:
            raise AssertionError(f"unexpected command {argv}")
        if callable(answer):
            return answer(argv)
        return answer.pop(0) if len(answer) > 1 else answer[0]

    def forwarding_refused(self, host: str, port: int) -> str:
        self.probes.append(f"{host}:{port}")
        return self.refuses_forwarding

    def forward_stdio(self, host: str, port: int) -> int:
        raise AssertionError("allocate never forwards stdio")

    def forward_command(self, argv: Sequence[str]) -> int:
        raise AssertionError("allocate never forwards stdio")

    def sharing(self) -> tuple[bool | None, str]:
        return True, "a fake login shares itself"

    @property
    def commands(self) -> list[str]:
        return [command_name(argv) for argv in self.calls]
