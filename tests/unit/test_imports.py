"""The package's shape: its imports form no circle, the login package is shaped like filelock (the
contract imports no backend, no backend imports another), and no module, class or function grows
past what one reader takes in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slurm_proxy

PACKAGE = Path(slurm_proxy.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The slurm_proxy modules ``path`` imports, at its top or inside a function (lazily)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("slurm_proxy")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("slurm_proxy"):
                continue
            for alias in node.names:  # `from . import x` names a module when x is one
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found - {me}


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_no_import_circle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " → ".join([*path, module, dep]))
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def test_the_graph_is_read() -> None:
    assert "slurm_proxy.login.base" in GRAPH["slurm_proxy.login.openssh"]
    assert "slurm_proxy.login.paramiko_backend" in GRAPH["slurm_proxy.login"]  # the lazy import


def test_the_login_contract_imports_no_backend() -> None:
    assert not {m for m in GRAPH["slurm_proxy.login.base"] if m.startswith("slurm_proxy.login")}


# Each login backend's own modules; what they share (base, pump, prompt, remote, sockets, …) is in
# modules of its own that belong to none.
BACKENDS = {
    "openssh": {"openssh", "control"},
    "paramiko": {"paramiko_backend", "paramiko_connect"},
    "agent": {"agent", "agent_server", "wire"},
}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_no_login_backend_imports_another(backend: str) -> None:
    others = {f"slurm_proxy.login.{m}" for b, ms in BACKENDS.items() if b != backend for m in ms}
    mine = {f"slurm_proxy.login.{m}" for m in BACKENDS[backend]}
    assert {(m, dep) for m in mine for dep in GRAPH[m] & others} == set()


def test_the_agent_server_holds_a_login_through_the_contract() -> None:
    assert {m for m in GRAPH["slurm_proxy.login.agent_server"] if m.startswith("slurm_proxy.login.")} <= {
        "slurm_proxy.login.base", "slurm_proxy.login.wire", "slurm_proxy.login.pump",
        "slurm_proxy.login.prompt"}


CLASS_MAX = 150  # lines, decorators included
FUNCTION_MAX = 60


def sizes() -> list[tuple[str, str, int]]:
    """(kind, where, lines) of every class and function (methods and nested ones too)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                where = f"{module_name(path)}:{node.lineno} {node.name}"
                found.append((kind, where, (node.end_lineno or node.lineno) - first + 1))
    return found


def test_no_class_or_function_does_too_many_jobs() -> None:
    limit = {"class": CLASS_MAX, "function": FUNCTION_MAX}
    assert [(kind, where, n) for kind, where, n in sizes() if n > limit[kind]] == []


def test_the_size_limits_are_measured() -> None:
    found = {where.split(" ")[-1]: n for kind, where, n in sizes() if kind == "class"}
    assert 50 < found["Allocator"] <= CLASS_MAX  # a class is read whole, not as its first line


def test_no_module_does_too_many_jobs() -> None:
    long = {module_name(p): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long


def test_every_module_says_its_job() -> None:
    assert [m for m in MODULES if not ast.get_docstring(ast.parse((PACKAGE.parent / (
        m.replace(".", "/") + ("/__init__.py" if (PACKAGE.parent / m.replace(".", "/")).is_dir() else ".py"))
    ).read_text()))] == []


@pytest.mark.parametrize("module", ["slurm_proxy.proxy", "slurm_proxy.login.agent"])
def test_the_proxy_path_never_imports_paramiko_or_click(module: str) -> None:
    """Neither the connect nor, with the agent, its side of the line: the agent holds paramiko."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         capture_output=True, text=True, check=True).stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.splitlines()}
    assert module in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("paramiko", "click", "filelock")}


def test_a_replayed_connect_imports_only_what_python_has_built_in() -> None:
    """What a warm connect whose memo holds imports before it execs the hop (warm.py), beyond
    what Python's own start imports: no pathlib, typing, re, json, subprocess."""
    import subprocess
    import sys

    def loaded(code: str) -> set[str]:
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                             capture_output=True, text=True, check=True).stderr
        return {line.rsplit("|", 1)[-1].strip() for line in out.splitlines()}

    warm = loaded("import slurm_proxy.__main__, slurm_proxy.warm, select, _socket") - loaded("pass")
    assert warm - {"select", "_socket"} == {"slurm_proxy", "slurm_proxy.__main__", "slurm_proxy.warm",
                                            "__future__"}
