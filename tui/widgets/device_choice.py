"""CPU or CUDA for a launched run; CUDA is greyed out (disabled) where torch cannot use it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import RadioButton, RadioSet

from diag.device import cuda_available


class DeviceChoice(RadioSet):
    """Two buttons; CUDA is preselected when available, else CPU (and CUDA is disabled)."""

    DEFAULT_CSS = """
    DeviceChoice { layout: horizontal; height: auto; width: 30; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cuda_ok = cuda_available()
        self.cpu = RadioButton("CPU", value=not self.cuda_ok, id="device-cpu")
        reason = "" if self.cuda_ok else "CUDA is not available here (torch.cuda.is_available())"
        self.cuda = RadioButton(
            "CUDA",
            value=self.cuda_ok,
            disabled=not self.cuda_ok,
            id="device-cuda",
            tooltip=reason or None,
        )

    def compose(self) -> ComposeResult:
        yield self.cpu
        yield self.cuda

    @property
    def device(self) -> str:
        """``cuda`` or ``cpu``: the ``--device`` value of the launched run."""
        return "cuda" if self.cuda_ok and self.cuda.value else "cpu"
