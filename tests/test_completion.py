"""Shell completion for `diag`, and `python -m diag` as the same program as the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def diag(*args: str, env: dict[str, str] | None = None, module: bool = True) -> str:
    command = [sys.executable, "-m", "diag"] if module else [shutil.which("diag") or "diag"]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(
        [*command, *args], env=full_env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("diag") is None, reason="the diag console script is not installed")
def test_python_m_diag_is_the_same_program_as_the_console_script():
    """Same usage line and options, for a command and a command group."""
    for args in (("export", "--help"), ("import", "tensorboard", "--help"), ("--version",)):
        by_module = diag(*args)
        assert by_module == diag(*args, module=False), args
    assert "Usage: diag export [OPTIONS]" in diag("export", "--help")


def test_bash_completion_completes_commands_and_subcommands():
    def complete(words: str, index: int) -> list[str]:
        env = {"_DIAG_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(index)}
        return diag(env=env).split()

    assert complete("diag ex", 1) == ["export"]
    assert complete("diag import ", 2) == ["tensorboard"]
    assert "--format" in complete("diag export run.db --f", 3)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_completion_writes_the_script_for_the_shell(tmp_path):
    """As a user does it, from bash: typer detects the shell from the parent processes, so under
    a pytest with no shell above it (an orphaned background job) it said "Shell None is not
    supported". The ``; exit $?`` keeps bash from exec-ing python in its place."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    subprocess.run(
        ["bash", "-c", f"{sys.executable} -m diag --install-completion; exit $?"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert (
        "_DIAG_COMPLETE=complete_bash" in (tmp_path / ".bash_completions" / "diag.sh").read_text()
    )
    assert ".bash_completions/diag.sh" in (tmp_path / ".bashrc").read_text()
