"""Mutation testing of the modules where a silent bug costs most, one module at a time.

    python bench/mutation.py security store --cap 900      # two modules, 15 min each at most
    python bench/mutation.py --list                        # the modules and their test sets

Why a script and not the default suite: mutmut runs the tests once per mutant (a few hundred per
module), which takes tens of minutes on 2 cores. Each module gets a *targeted* test selection
(the tests that exercise it, the slow multi-process ones left out) and a wall-clock cap; what was
not reached by the cap is reported as "not checked", never counted either way.

Each module runs in a fresh copy of the tree under ``--work`` (mutmut rewrites the code it
mutates into ``mutants/`` next to ``pyproject.toml``), with the ``[tool.mutmut]`` section of
``pyproject.toml`` replaced by one for that module. The score is killed / (killed + survived)
over the mutants that were checked (a mutant that makes a test hang counts as killed: the
suite noticed); mutants no selected test reaches are counted apart; survivors are listed by name
(``python -m mutmut show NAME`` in the module's work folder prints the diff). Triage them in
docs/mutation.md: kill with a test, or say why the mutant is equivalent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("probes", "diag", "tui", "demos", "edgewatch", "tests", "pyproject.toml")

# Per module: the tests that exercise it, fast enough to run once per mutant. Node ids keep
# unrelated tests of a shared file out; "--deselect" drops the slow end-to-end ones.
TESTS: dict[str, list[str]] = {
    "diagnostics": [
        "tests/test_diagnostics.py",
        "tests/test_planted_bugs.py",
        "tests/test_mutants.py",
    ],
    "control": [
        "tests/test_control.py",
        "tests/test_planted_bugs.py::test_spectral_clip_through_the_monitor_bounds_each_update_by_c",
        "tests/test_mutants.py",
    ],
    "security": [
        "tests/test_security.py",
        "tests/test_planted_bugs.py::test_rate_limiter_caps_the_bucket_at_burst_after_a_long_idle",
        "tests/test_planted_bugs.py::test_rate_limiter_partly_drained_bucket_refills_only_up_to_burst",
        "tests/test_mutants.py",
        "--deselect",
        "tests/test_security.py::test_headless_diag_run_with_keys_on_a_public_address_serves_only_key_holders",
    ],
    "store": [
        "tests/test_store.py",
        "tests/test_run_store.py",
        "tests/test_export_parquet.py",
        "tests/test_planted_bugs.py::test_exception_inside_with_monitor_reads_back_from_the_store_as_crashed",
        "tests/test_mutants.py",
    ],
    # Without processes: the two-process gloo tests (~20 s each under load) and the TUI's
    # Ranks screen (no code of probes/ranks.py) are left out; tests/test_mutants.py drives
    # rank 0's transport in one process instead.
    "ranks": [
        "tests/test_ranks.py",
        "tests/test_mutants.py",
        "-k",
        "not two_ranks_stream and not rank_dying and not screen and not nproc",
    ],
}
STATES = ("killed", "survived", "timeout", "suspicious", "no_tests", "skipped", "segfault")


def _mutmut_section(module: str, tests: list[str]) -> str:
    lines = [
        "[tool.mutmut]",
        'source_paths = ["probes"]',
        f'only_mutate = ["probes/{module}.py"]',
        'also_copy = ["diag", "tui", "demos", "edgewatch"]',
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
    ]
    return "\n".join(lines) + "\n"


def _prepare(module: str, work: Path) -> Path:
    """A fresh copy of the tree whose pyproject mutates only ``probes/<module>.py``."""
    folder = work / module
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "runs")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, folder / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, folder / name)
    pyproject = folder / "pyproject.toml"
    text = re.sub(r"\[tool\.mutmut\].*?(?=^\[)", "", pyproject.read_text(), flags=re.S | re.M)
    pyproject.write_text(text + "\n" + _mutmut_section(module, TESTS[module]))
    return folder


def _run_capped(folder: Path, cap: float, children: int, only: list[str]) -> bool:
    """Run mutmut in ``folder`` for at most ``cap`` seconds; True when it finished."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *only]
    with open(folder / "mutmut-run.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=folder, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            proc.wait(timeout=cap)
            return proc.returncode == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return False


def _results(folder: Path) -> dict[str, list[str]]:
    """Mutant names by state, from ``mutmut results --all true`` (not-checked ones included)."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    ).stdout
    by_state: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, sep, state = line.strip().rpartition(": ")
        if sep:
            by_state.setdefault(state.strip().replace(" ", "_"), []).append(name)
    return by_state


def _report(module: str, by_state: dict[str, list[str]], seconds: float, finished: bool) -> dict:
    counts = {state: len(names) for state, names in by_state.items()}
    killed = counts.get("killed", 0) + counts.get("timeout", 0)  # a hang is a detected bug
    survived = counts.get("survived", 0)
    score = killed / (killed + survived) if killed + survived else float("nan")
    print(
        f"{module:12s} score {score:6.1%}  killed {killed}  survived {survived}  "
        f"no tests {counts.get('no_tests', 0)}  not checked {counts.get('not_checked', 0)}  "
        f"({seconds:.0f} s{'' if finished else ', capped'})"
    )
    for name in by_state.get("survived", []):
        print(f"    survived: {name}")
    return {
        "module": module,
        "score": score,
        "counts": counts,
        "seconds": seconds,
        "finished": finished,
        "survived": by_state.get("survived", []),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(TESTS)} (default: all)")
    parser.add_argument("--cap", type=float, default=1200, help="seconds per module (default 1200)")
    parser.add_argument("--children", type=int, default=2, help="parallel mutant runs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgewatch-mutation"))
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="mutant name glob, e.g. 'probes.store.xǁStoreReaderǁ*' (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the per-module results here")
    parser.add_argument("--list", action="store_true", help="print the modules' test sets")
    args = parser.parse_args()
    if args.list:
        for module, tests in TESTS.items():
            print(f"{module}: {' '.join(tests)}")
        return 0
    unknown = sorted(set(args.modules) - set(TESTS))
    if unknown:
        print(f"unknown module(s) {unknown}; choose from {', '.join(TESTS)}", file=sys.stderr)
        return 2
    reports = []
    for module in args.modules or list(TESTS):
        folder = _prepare(module, args.work)
        start = time.monotonic()
        finished = _run_capped(folder, args.cap, args.children, args.only)
        reports.append(_report(module, _results(folder), time.monotonic() - start, finished))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
