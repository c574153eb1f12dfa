"""Keep run stores and checkpoints that tests create out of the working tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
TOOL_CACHES = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}


@pytest.fixture(autouse=True, scope="session")
def _runs_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    previous = os.environ.get("EDGEWATCH_RUNS")
    os.environ["EDGEWATCH_RUNS"] = str(folder)  # subprocesses (diag run …) inherit it
    yield folder
    if previous is None:
        os.environ.pop("EDGEWATCH_RUNS", None)
    else:
        os.environ["EDGEWATCH_RUNS"] = previous


def checkout_files(root: Path = CHECKOUT) -> set[Path]:
    """Every file and folder under the checkout, tool caches left out."""
    found = set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in TOOL_CACHES]
        here = Path(folder)
        found.update(here / name for name in [*subfolders, *files])
    return found


@pytest.fixture(autouse=True, scope="session")
def _checkout_stays_clean():
    """Tests write only to tmp: a run store or export left in the checkout (issue #17) fails
    the session here, naming the files, instead of piling up in `git status`."""
    before = checkout_files()
    yield
    created = sorted(str(p.relative_to(CHECKOUT)) for p in checkout_files() - before)
    listed = ", ".join(created[:10])
    assert not created, f"files appeared in the checkout during the tests (write to tmp): {listed}"


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: on the shared 2-core machine one torch thread is many times faster than
    two. A test module opts in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
