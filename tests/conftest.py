"""Keep run stores and checkpoints that tests create out of the working tree."""

from __future__ import annotations

import os

import pytest


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
