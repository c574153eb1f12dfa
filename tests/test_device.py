"""Device selection rules, unit-tested on a CPU-only machine by patching CUDA availability."""

from __future__ import annotations

import pytest
import torch

from diag.device import DeviceError, resolve_device


@pytest.fixture
def fake_cuda(monkeypatch):
    def set_cuda(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return set_cuda


def test_auto_picks_cuda_when_available_else_cpu(fake_cuda):
    fake_cuda(0)
    assert resolve_device("auto") == torch.device("cpu")
    fake_cuda(2)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_cuda_without_cuda_says_what_to_use(fake_cuda):
    fake_cuda(0)
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_device("cuda")


def test_cuda_index_is_checked_against_device_count(fake_cuda):
    fake_cuda(2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match="2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_device_names_are_rejected(bad, fake_cuda):
    fake_cuda(1)
    with pytest.raises(DeviceError):
        resolve_device(bad)


def test_cpu_is_always_cpu(fake_cuda):
    fake_cuda(4)
    assert resolve_device(" CPU ") == torch.device("cpu")
