"""System metrics of the training process, sampled on the I/O thread at most once a second.

CPU % and resident memory of this process (psutil), and where a GPU is present its utilisation,
memory used, power and temperature (NVML's Python bindings, ``pynvml``) and what PyTorch's
allocator holds (reserved / allocated). Both libraries are optional (the ``system`` extra): a
value whose source is missing is simply not published. The sampler runs where the Monitor's
records are finished (the I/O thread), never on the training thread, and adds its values to
the next metrics record, so charts, the store and the per-rank views get them like any scalar.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

SYSTEM_METRICS = {
    "sys_cpu_pct": "CPU % (of one core)",
    "sys_rss_mb": "resident memory, MiB",
    "gpu_util_pct": "GPU utilisation %",
    "gpu_mem_used_mb": "GPU memory used (NVML), MiB",
    "gpu_reserved_mb": "held by PyTorch's allocator, MiB",
    "gpu_allocated_mb": "allocated to tensors, MiB",
    "gpu_power_w": "GPU power, W",
    "gpu_temp_c": "GPU temperature, °C",
}
"""Every scalar the sampler can publish, in the order a viewer shows them, with what it is.
A viewer shows those present in the stream (no GPU, no psutil: fewer of them)."""
SYSTEM_INTERVAL_S = 1.0
"""Seconds between samples (W&B's and nvitop's system panels refresh at about this rate)."""


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except Exception:  # missing, or broken (no driver): no such values
        return None


class SystemSampler:
    """``sample(now)`` → the system scalars, or ``{}`` when the last sample is under
    :data:`SYSTEM_INTERVAL_S` old. Never raises: a source that fails is dropped."""

    def __init__(
        self,
        interval: float = SYSTEM_INTERVAL_S,
        device: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._next = 0.0
        self._process = None
        psutil = _optional("psutil")
        if psutil is not None:
            with contextlib.suppress(Exception):
                self._process = psutil.Process(os.getpid())
                self._process.cpu_percent(None)  # the first call only starts the interval
        self._device = device
        self._nvml: Any = None
        self._handle: Any = None

    def _gpu_handle(self) -> Any:
        """NVML's handle of the GPU this process uses (set up on first use: the CUDA device
        is known only once the model is on it)."""
        if self._handle is not None or self._nvml is False:
            return self._handle
        torch = _optional("torch")
        nvml = _optional("pynvml")
        if nvml is None or torch is None or not torch.cuda.is_available():
            self._nvml = False
            return None
        try:
            nvml.nvmlInit()
            index = torch.cuda.current_device() if self._device is None else self._device
            self._nvml, self._handle = nvml, nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            self._nvml = False
        return self._handle

    def sample(self, now: float | None = None) -> dict[str, float]:
        now = self.clock() if now is None else now
        if now < self._next:
            return {}
        self._next = now + self.interval
        out: dict[str, float] = {}
        if self._process is not None:
            try:
                out["sys_cpu_pct"] = float(self._process.cpu_percent(None))
                out["sys_rss_mb"] = self._process.memory_info().rss / 2**20
            except Exception:
                self._process = None
        out.update(self._cuda())
        return out

    def _cuda(self) -> dict[str, float]:
        out: dict[str, float] = {}
        torch = _optional("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            with contextlib.suppress(Exception):
                out["gpu_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
                out["gpu_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        handle = self._gpu_handle()
        if handle is None:
            return out
        nvml = self._nvml
        try:
            out["gpu_util_pct"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            out["gpu_mem_used_mb"] = nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            out["gpu_power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            out["gpu_temp_c"] = float(
                nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            )
        except Exception:
            self._handle, self._nvml = None, False
        return out
