"""edgewatch probes: everything that runs inside the training process.

Imports torch, numpy, pyzmq and msgpack only — never textual — so a training job carries no UI
code. The one object most users need is :class:`Monitor`.
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probes.endpoints import DEFAULT_ENDPOINT, EndpointError
    from probes.monitor import Monitor
    from probes.transport import InProcessTransport, ZmqTransport
    from probes.wire import Record, WireError

_EXPORTS = {
    "DEFAULT_ENDPOINT": "probes.endpoints",
    "EndpointError": "probes.endpoints",
    "InProcessTransport": "probes.transport",
    "Monitor": "probes.monitor",
    "Record": "probes.wire",
    "WireError": "probes.wire",
    "ZmqTransport": "probes.transport",
}


def __getattr__(name: str) -> object:
    """Import on first use (PEP 562): a viewer that needs only ``probes.wire`` or
    ``probes.client`` must not pay for importing torch (seconds, and ~150 k objects that
    every full garbage collection in the UI would then walk)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'probes' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "DEFAULT_ENDPOINT",
    "EndpointError",
    "InProcessTransport",
    "Monitor",
    "Record",
    "WireError",
    "ZmqTransport",
]
__version__ = "0.1.0"
