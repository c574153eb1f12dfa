"""Smoke test of an INSTALLED edgewatch, run from outside the checkout.

``python /repo/.ci/smoke.py REPO [WHEEL]``: the packages must come from site-packages (not the
checkout), the wheel must hold every file git tracks in the package folders (a new subpackage
or a .tcss left out of the build fails here), every `diag` command's --help and bare `diag`
exit 0, a short headless run records a store that `diag runs`/`export` read, and the TUI starts
on its stylesheet (launcher and a replay of that store).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = ("probes", "diag", "tui", "demos", "edgewatch")
DIAG = Path(sys.executable).with_name("diag")


def check_installed_not_the_checkout(repo: Path) -> None:
    for name in PACKAGES:
        where = Path(__import__(name).__file__).resolve()
        assert repo not in where.parents, f"{name} imported from the checkout: {where}"


def check_wheel_holds_tracked_files(repo: Path, wheel: Path) -> None:
    tracked = subprocess.run(
        ["git", "-C", str(repo), "ls-files", *PACKAGES], capture_output=True, text=True, check=True
    ).stdout.split()
    held = set(zipfile.ZipFile(wheel).namelist())
    missing = [path for path in tracked if path not in held]
    assert not missing, f"{wheel.name} lacks {len(missing)} tracked files: {missing[:10]}"
    print(f"wheel: {len(tracked)} tracked package files, all present")


def diag(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(DIAG), *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"diag {' '.join(args)} → {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def check_every_help() -> None:
    import typer

    from diag.cli import app

    commands = sorted(typer.main.get_command(app).commands)
    for args in ([], ["--help"], ["--version"], *([c, "--help"] for c in commands)):
        out = diag(*args, env={**os.environ, "COLUMNS": "120"})
        assert ("Usage" in out) or args == ["--version"], f"diag {' '.join(args)}:\n{out}"
    print(f"help: bare diag, --help, --version and {len(commands)} commands' --help exit 0")


def check_headless_run_and_store(runs: Path) -> Path:
    env = {**os.environ, "EDGEWATCH_RUNS": str(runs)}
    diag("run", "grokking", "--no-tui", "--quiet", "--steps", "20", "--endpoint",
         "tcp://127.0.0.1:0", env=env)  # fmt: skip
    stores = sorted(runs.glob("*.db"))
    assert len(stores) == 1, f"expected one run store in {runs}, found {stores}"
    assert "finished" in diag("runs", str(runs), env={**env, "COLUMNS": "200"})
    out = diag("export", str(stores[0]), "--out", str(runs / "run.csv"))
    assert (runs / "run.csv").stat().st_size > 0, out
    print(f"run: 20 headless steps recorded, listed and exported ({out.strip()})")
    return stores[0]


async def check_tui_starts(store: Path) -> None:
    from tui.app import EdgewatchApp
    from tui.replay import ReplayApp, ReplaySource

    async with EdgewatchApp([], launcher=True).run_test(size=(100, 30)) as pilot:
        await pilot.pause()
    source = ReplaySource.open(store, playing=False)
    try:
        async with ReplayApp(source).run_test(size=(100, 30)) as pilot:
            await pilot.pause()
    finally:
        source.close()
    print("tui: launcher and replay started with the installed stylesheet")


def main(repo: Path, wheel: Path | None) -> None:
    assert DIAG.exists(), f"no diag console script beside {sys.executable}"
    check_installed_not_the_checkout(repo)
    if wheel is not None:
        check_wheel_holds_tracked_files(repo, wheel)
    check_every_help()
    with tempfile.TemporaryDirectory() as tmp:
        store = check_headless_run_and_store(Path(tmp))
        asyncio.run(check_tui_starts(store))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
