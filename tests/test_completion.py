"""Shell completion for `auditd` (bash and zsh) through argcomplete, an optional dependency:
the shell runs the command with _ARGCOMPLETE set and reads the candidates back."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("argcomplete", reason="pip install 'auditd[completion]' brings argcomplete")


def complete(tmp_path, line: str) -> list[str]:
    out = tmp_path / "completions"
    env = dict(os.environ, _ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_STDOUT_FILENAME=str(out))
    done = subprocess.run([sys.executable, "-m", "auditd"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return sorted(out.read_text().replace("\x0b", " ").split())


@pytest.mark.parametrize("line, expected", [
    ("auditd us", ["user"]),
    ("auditd user ", ["--help", "-h", "add", "list", "remove", "rotate-key"]),
    ("auditd serve --admin", ["--admin-key"]),
    ("auditd export --format ", ["csv", "ndjson"]),
    ("auditd action ", ["--help", "-h", "cancel", "inspect", "logs", "ls", "retry"]),
])
def test_commands_options_and_choices_complete(tmp_path, line, expected):
    assert complete(tmp_path, line) == expected


def test_without_the_shell_asking_nothing_changes():
    done = subprocess.run([sys.executable, "-m", "auditd", "--version"], capture_output=True,
                          text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                       if k != "_ARGCOMPLETE"})
    assert done.returncode == 0 and done.stdout.startswith("auditd ")
