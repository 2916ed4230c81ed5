"""host_block.py: the Host block for slurm-* aliases, and installing it into ~/.ssh/config."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path, PurePath, PureWindowsPath

import pytest

from slurm_proxy import host_block
from slurm_proxy.host_block import BEGIN, END

CMD = ["/usr/local/bin/slurm-proxy"]
KNOWN = Path("/home/me/.local/state/slurm-proxy/known_hosts")


def block(prefix: str = "slurm-", command: list[str] | None = None, known_hosts: Path = KNOWN) -> str:
    return host_block.host_block(prefix, command or CMD, known_hosts)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the block --------------------------------------------------------------------------------

def test_host_block_exact() -> None:
    assert block() == (
        f"{BEGIN}\n"
        "Host slurm-* \"!*'*\"\n"
        "    ProxyCommand /usr/local/bin/slurm-proxy '%h'\n"
        '    UserKnownHostsFile "/home/me/.local/state/slurm-proxy/known_hosts"\n'
        "    CheckHostIP no\n"
        "    ServerAliveInterval 30\n"
        "Match all\n"
        f"{END}\n"
    )


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["/home/a b/venv/bin/python", "-m", "slurm_proxy"], "'/home/a b/venv/bin/python' -m slurm_proxy"),
        (["/home/u/100%/bin/slurm-proxy"], "/home/u/100%%/bin/slurm-proxy"),
        (["/opt/my 50% tools/slurm-proxy"], "'/opt/my 50%% tools/slurm-proxy'"),
        (["/opt/it's/slurm-proxy"], "'/opt/it'\"'\"'s/slurm-proxy'"),
        (["/opt/%h/slurm-proxy"], "/opt/%%h/slurm-proxy"),
    ],
)
def test_host_block_quotes_and_escapes_the_command(command: list[str], shown: str) -> None:
    text = block(command=command)
    assert f"    ProxyCommand {shown} '%h'\n" in text
    # What ssh runs, once it has turned %% into %, is the command again, word for word.
    proxy_line = next(ln for ln in text.splitlines() if "ProxyCommand" in ln)
    words = shlex.split(proxy_line.split("ProxyCommand ", 1)[1].replace("%%", "%"))
    assert words[:-1] == command
    assert words[-1] == "%h"


@pytest.mark.parametrize(
    ("known_hosts", "shown"),
    [
        (Path("/home/a b/state/known_hosts"), '"/home/a b/state/known_hosts"'),
        (Path("/home/u/100%/known_hosts"), '"/home/u/100%%/known_hosts"'),
        (Path("/srv/%h/known_hosts"), '"/srv/%%h/known_hosts"'),
    ],
)
def test_host_block_quotes_and_escapes_the_known_hosts_file(known_hosts: Path, shown: str) -> None:
    assert f"    UserKnownHostsFile {shown}\n" in block(known_hosts=known_hosts)


def test_host_block_prefix() -> None:
    assert "\nHost hpc-* \"!*'*\"\n" in block(prefix="hpc-")


def test_host_block_ends_by_matching_all_hosts_again() -> None:
    lines = block().splitlines()
    assert lines[0] == BEGIN and lines[-1] == END
    assert lines[-2] == "Match all"


# --- installing -------------------------------------------------------------------------------

USER_CONFIG = "Host hpc\n    HostName login.hpc.example.org\n    User me\n"


def test_install_into_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "dot-ssh" / "config"
    assert host_block.install(block(), path) is True
    assert path.read_text() == block()
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert not path.with_name("config.slurm-proxy.bak").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["config"]  # no temporary file left


def test_install_into_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(USER_CONFIG)
    path.chmod(0o644)
    assert host_block.install(block(), path) is True
    assert path.read_text() == block() + USER_CONFIG
    assert mode(path) == 0o644  # the user's file keeps its mode
    backup = tmp_path / "config.slurm-proxy.bak"
    assert backup.read_text() == USER_CONFIG
    assert mode(backup) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "config.slurm-proxy.bak"]


def test_install_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(USER_CONFIG)
    assert host_block.install(block(), path) is True
    before = path.read_text()
    stat_before = path.stat()
    backup_before = (tmp_path / "config.slurm-proxy.bak").read_text()
    assert host_block.install(block(), path) is False
    assert path.read_text() == before
    assert path.stat().st_ino == stat_before.st_ino  # not even rewritten
    assert path.stat().st_mtime_ns == stat_before.st_mtime_ns
    assert (tmp_path / "config.slurm-proxy.bak").read_text() == backup_before


@pytest.mark.parametrize("tail", ["\n", ""], ids=["newline-after-end", "end-at-eof"])
def test_install_replaces_an_older_block_in_place(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "config"
    old_block = f"{BEGIN}\nHost slurm-*\n    ProxyCommand /old/slurm-proxy %h\n{END}{tail}"
    before = "# my settings\nHost a\n    User x\n\n"
    after = USER_CONFIG if tail else ""
    original = before + old_block + after
    path.write_text(original)
    assert host_block.install(block(), path) is True
    assert path.read_text() == before + block() + after
    assert path.read_text().count(BEGIN) == 1
    assert "/old/slurm-proxy" not in path.read_text()
    assert (tmp_path / "config.slurm-proxy.bak").read_text() == original


def test_install_replaces_only_the_first_block(tmp_path: Path) -> None:
    path = tmp_path / "config"
    old = f"{BEGIN}\nold one\n{END}\n"
    path.write_text(old + USER_CONFIG + old)
    assert host_block.install(block(), path) is True
    assert path.read_text() == block() + USER_CONFIG + old


def test_install_a_changed_block_keeps_the_user_config(tmp_path: Path) -> None:
    path = tmp_path / "config"
    host_block.install(block(), path)
    path.write_text(path.read_text() + USER_CONFIG)
    other = block(command=["/new/slurm-proxy"], known_hosts=tmp_path / "kh")
    assert host_block.install(other, path) is True
    assert path.read_text() == other + USER_CONFIG


def test_install_through_a_symlink_updates_the_target(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "ssh_config"
    target.parent.mkdir()
    target.write_text(USER_CONFIG)
    link = tmp_path / "config"
    link.symlink_to(target)
    host_block.install(block(), link)
    assert link.is_symlink()
    assert target.read_text() == block() + USER_CONFIG



# --- quoting for the platform's ssh -----------------------------------------------------------

WIN_SPACE = r"C:\Program Files\Python311\Scripts\slurm-proxy.exe"
MAC_SPACE = "/Users/Jane Doe/.local/bin/slurm-proxy"


@pytest.mark.parametrize(
    ("command", "windows", "line"),
    [
        ([WIN_SPACE], True, f'"{WIN_SPACE}"'),
        ([r"C:\Users\jane\.local\bin\slurm-proxy.exe"], True, r"C:\Users\jane\.local\bin\slurm-proxy.exe"),
        (["python.exe", "-m", "slurm_proxy"], True, "python.exe -m slurm_proxy"),
        ([r"C:\Python 3\python.exe", "-m", "slurm_proxy"], True, r'"C:\Python 3\python.exe" -m slurm_proxy'),
        ([r"C:\100%\slurm-proxy.exe"], True, r"C:\100%%\slurm-proxy.exe"),
        ([r"C:\my 50% tools\slurm-proxy.exe"], True, r'"C:\my 50%% tools\slurm-proxy.exe"'),
        ([r"C:\it's\slurm-proxy.exe"], True, r"C:\it's\slurm-proxy.exe"),
        (["C:\\tab\there\\x.exe"], True, '"C:\\tab\there\\x.exe"'),
        ([r"C:\a b\\", 'say "hi"', ""], True, r'"C:\a b\\\\" "say \"hi\"" ""'),
        ([MAC_SPACE], False, f"'{MAC_SPACE}'"),
        (["/home/jane/.local/bin/slurm-proxy"], False, "/home/jane/.local/bin/slurm-proxy"),
        (["python3", "-m", "slurm_proxy"], False, "python3 -m slurm_proxy"),
        (["/opt/100%/bin/slurm-proxy"], False, "/opt/100%%/bin/slurm-proxy"),
        (["/opt/it's/slurm-proxy"], False, "'/opt/it'\"'\"'s/slurm-proxy'"),
        (['/opt/say "hi"/x', ""], False, "'/opt/say \"hi\"/x' ''"),
    ],
    ids=["win-space", "win-plain", "win-several-words", "win-space-several-words", "win-percent",
         "win-space-percent", "win-single-quote", "win-tab", "win-backslashes-quotes-empty",
         "posix-space", "posix-plain", "posix-several-words", "posix-percent", "posix-single-quote",
         "posix-double-quote-empty"],
)
def test_the_proxy_command_is_quoted_for_the_platform(command: list[str], windows: bool, line: str) -> None:
    assert host_block.command_line(command, windows) == line
    host = '"%h"' if windows else "'%h'"
    text = host_block.host_block("slurm-", command, Path("/k"), windows)
    assert f"    ProxyCommand {line} {host}\n" in text


ROUND_TRIP = [
    [WIN_SPACE],
    [MAC_SPACE],
    [r"C:\Users\jane\.local\bin\slurm-proxy.exe"],
    ["/home/jane/.local/bin/slurm-proxy"],
    ["python.exe", "-m", "slurm_proxy"],
    [r"C:\Python 3\python.exe", "-m", "slurm_proxy"],
    ["/a b/c", "-m", "x y"],
    [r"C:\100% done\x.exe", "%h", "50%"],
    [r"C:\a b\\", r"C:\tail\\", 'say "hi"', r"back\"quote", "", "tab\there"],
    ["/opt/it's/x", "$HOME", "a;b", "*"],
]


@pytest.mark.parametrize("command", ROUND_TRIP)
def test_posix_quoting_gives_back_the_words(command: list[str]) -> None:
    # ssh turns %% into % and hands the line to the user's shell.
    assert shlex.split(host_block.command_line(command, False).replace("%%", "%")) == command


@pytest.mark.parametrize("command", ROUND_TRIP)
def test_windows_quoting_gives_back_the_words(command: list[str]) -> None:
    line = host_block.command_line(command, True)
    assert line == subprocess.list2cmdline(command).replace("%", "%%")
    assert _windows_split(line.replace("%%", "%")) == command
    assert "'" not in line or any("'" in word for word in command)  # no POSIX quoting


@pytest.mark.parametrize(
    ("known_hosts", "windows", "shown"),
    [
        (PureWindowsPath(r"C:\Users\Jane Doe\.local\state\slurm-proxy\known_hosts"), True,
         r'"C:\Users\Jane Doe\.local\state\slurm-proxy\known_hosts"'),
        (PureWindowsPath(r"C:\Users\u\100%\known_hosts"), True, r'"C:\Users\u\100%%\known_hosts"'),
        (Path("/Users/Jane Doe/.local/state/slurm-proxy/known_hosts"), False,
         '"/Users/Jane Doe/.local/state/slurm-proxy/known_hosts"'),
    ],
    ids=["win-space", "win-percent", "posix-space"],
)
def test_the_known_hosts_file_is_double_quoted_on_both(
        known_hosts: PurePath, windows: bool, shown: str) -> None:
    text = host_block.host_block("slurm-", [WIN_SPACE if windows else MAC_SPACE], known_hosts, windows)
    assert f"    UserKnownHostsFile {shown}\n" in text


@pytest.mark.parametrize(("os_name", "line"), [("nt", f'"{WIN_SPACE}" "%h"'),
                                               ("posix", f"'{WIN_SPACE}' '%h'")])
def test_the_platform_is_this_one_unless_told(
        monkeypatch: pytest.MonkeyPatch, os_name: str, line: str) -> None:
    known = Path("/k")  # made before os.name changes: pathlib reads it
    with monkeypatch.context() as m:
        m.setattr(os, "name", os_name)
        shown = host_block.command_line([WIN_SPACE])
        text = host_block.host_block("s-", [WIN_SPACE], known)
    assert line.startswith(shown + " ")
    assert f"    ProxyCommand {line}\n" in text


def _windows_split(line: str) -> list[str]:
    """``line`` split as CommandLineToArgvW (and the MS C runtime) split it: blanks outside double
    quotes part words; 2n backslashes before a quote give n and the quote toggles quoting, 2n+1
    give n and a literal quote; other backslashes are literal."""
    words: list[str] = []
    word, quoted, started, i = "", False, False, 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            n = len(line[i:]) - len(line[i:].lstrip("\\"))
            i += n
            if i < len(line) and line[i] == '"':
                word += "\\" * (n // 2)
                if n % 2:
                    word += '"'
                    i += 1
            else:
                word += "\\" * n
            started = True
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c in " \t" and not quoted:
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + c, True
        i += 1
    return [*words, word] if started else words


# --- a Host per profile, kept in step with the config -----------------------------------------

def listed_block(aliases: list[str], prefix: str = "slurm-") -> str:
    return host_block.host_block(prefix, CMD, KNOWN, False, aliases)


def test_each_alias_has_a_host_of_its_own_naming_itself() -> None:
    assert listed_block(["slurm-cpu", "slurm-GPU2"]) == (
        f"{BEGIN}\n"
        "Host slurm-cpu\n"
        "    ProxyCommand /usr/local/bin/slurm-proxy slurm-cpu\n"
        "Host slurm-GPU2\n"  # as written: ssh would lower the case of %h
        "    ProxyCommand /usr/local/bin/slurm-proxy slurm-GPU2\n"
    ) + block().split("\n", 1)[1]  # then the pattern, as without a profile


def test_a_windows_block_lists_the_same_hosts_for_its_ssh() -> None:
    text = host_block.host_block("slurm-", [WIN_SPACE], PureWindowsPath(r"C:\Users\j\kh"), True,
                                 ["slurm-cpu"])
    lines = text.splitlines()
    assert lines[1:4] == ["Host slurm-cpu", f'    ProxyCommand "{WIN_SPACE}" slurm-cpu',
                          "Host slurm-* \"!*'*\""]
    assert _windows_split(lines[2].split("ProxyCommand ", 1)[1]) == [WIN_SPACE, "slurm-cpu"]
    # %h stands in double quotes: a name with blanks stays one word for CreateProcess.
    pattern_command = lines[4].split("ProxyCommand ", 1)[1]
    assert _windows_split(pattern_command.replace("%h", "slurm-x & calc")) == [WIN_SPACE, "slurm-x & calc"]


USER_HOSTS = "Host hpc\n    User me\nHost slurm-own other *.example.org !slurm-not\n    User you\n"


def test_listing_leaves_out_an_alias_the_user_names_outside_the_block() -> None:
    text = listed_block(["slurm-a", "slurm-own"]) + USER_HOSTS
    assert host_block.listing("slurm-", ["a", "own", "new"], text) == \
        host_block.Listing(["slurm-a", "slurm-new"], ["slurm-own"])
    assert host_block.host_names(USER_HOSTS) == ["hpc", "slurm-own", "other"]


def test_install_follows_the_config_one_block_user_lines_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "config"
    before, after = "# mine\r\nHost a\n  User x  \n\n", "Host *\n    ConnectTimeout 10\n\xe9t\xe9\n"
    path.write_bytes(before.encode() + after.encode("latin-1"))  # not UTF-8, and mixed line ends
    for names in (["a", "b"], ["a", "b", "c"], ["c"], []):
        changed, listed = host_block.install_listing(path, "slurm-", names, CMD, KNOWN)
        assert changed and listed.aliases == [f"slurm-{n}" for n in names]
        data = path.read_bytes()
        assert data.count(BEGIN.encode()) == 1
        assert data.endswith(before.encode() + after.encode("latin-1"))
        assert host_block.host_names(host_block.split(host_block.read(path))[1] or "") == listed.aliases
    assert host_block.install_listing(path, "slurm-", [], CMD, KNOWN)[0] is False


def test_install_keeps_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"Host hpc\r\n    User me\r\n")
    host_block.install(listed_block(["slurm-a"]), path)
    data = path.read_bytes()
    assert data == listed_block(["slurm-a"]).replace("\n", "\r\n").encode() + b"Host hpc\r\n    User me\r\n"
    host_block.install(listed_block(["slurm-b"]), path)  # found again and replaced, not added
    assert path.read_bytes().count(BEGIN.encode()) == 1 and b"slurm-b\r\n" in path.read_bytes()


def test_the_backup_is_the_previous_file_one_replaced_each_time(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(USER_CONFIG)
    host_block.install(listed_block(["slurm-a"]), path)
    first = path.read_bytes()
    host_block.install(listed_block(["slurm-b"]), path)
    assert (tmp_path / "config.slurm-proxy.bak").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "config.slurm-proxy.bak"]


@pytest.mark.parametrize(
    ("names", "prefix", "said"),
    [
        (["a", "b"], "slurm-", ""),
        (["a", "b", "c"], "slurm-", "lacks slurm-c"),
        (["a"], "slurm-", "still lists slurm-b"),
        (["a", "c"], "slurm-", "lacks slurm-c and still lists slurm-b"),
        (["a", "b"], "hpc-",
         "lacks hpc-a, hpc-b and still lists slurm-a, slurm-b and sends slurm-*, not hpc-*"),
        (["a", "b", "own"], "slurm-", ""),  # the user's own Host line lists it
    ],
)
def test_drift_says_how_the_block_differs(tmp_path: Path, names: list[str], prefix: str, said: str) -> None:
    path = tmp_path / "config"
    path.write_text(listed_block(["slurm-a", "slurm-b"]) + USER_HOSTS)
    line = host_block.drift(prefix, names, path)
    assert line == (f"the slurm-proxy block in {path} {said}" if said else "")


def test_no_block_is_no_drift(tmp_path: Path) -> None:
    assert host_block.drift("slurm-", ["a"], tmp_path / "none") == ""
    (tmp_path / "config").write_text(USER_HOSTS)
    assert host_block.drift("slurm-", ["a"], tmp_path / "config") == ""


# --- a crafted host name never reaches a shell (issue #24) --------------------------------------

PWNED = "/tmp/slurm-proxy-unit-pwned"
CRAFTED = [
    f"slurm-x$(touch {PWNED})",
    f"slurm-x`touch {PWNED}`",
    f"slurm-x;touch {PWNED}",
    f"slurm-x|touch {PWNED}",
    f"slurm-x&&touch {PWNED}",
    f"slurm-x\ntouch {PWNED}",
    f"slurm-x';touch {PWNED};'",  # ends single quotes: kept out of the pattern instead
    f"slurm-x' $(touch {PWNED}) '",
]


@pytest.mark.parametrize("name", CRAFTED)
def test_a_crafted_name_runs_nothing_with_an_openssh_older_than_9_6(tmp_path: Path, name: str) -> None:
    """An OpenSSH before 9.6 takes any host name from its command line (a git submodule URL).
    The block is read by another implementation's parser (paramiko's, which expands %h as ssh
    does), and the command it gives runs as ssh runs it: ``$SHELL -c "exec <command>"``. The
    name reaches slurm-proxy as one word, or does not match the pattern at all."""
    import paramiko

    Path(PWNED).unlink(missing_ok=True)
    argv_of = tmp_path / "argv"
    command = [sys.executable, "-c", f"import sys; open({str(argv_of)!r}, 'w').write(repr(sys.argv[1:]))"]
    found = paramiko.SSHConfig.from_text(host_block.host_block("slurm-", command, KNOWN, False, ["slurm-a"]))
    proxy = found.lookup(name).get("proxycommand")
    if proxy is None:
        assert "'" in name  # the one character single quotes cannot hold keeps it out
    else:
        subprocess.run(["/bin/sh", "-c", f"exec {proxy}"], check=False, timeout=30)
        assert argv_of.read_text() == repr([name])
    assert not Path(PWNED).exists()
    # ...and the alias on the pattern's line is a single-quoted %h, as real ssh reads the block.
    assert found.lookup("slurm-b")["proxycommand"].endswith(" 'slurm-b'")
