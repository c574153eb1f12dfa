"""edgewatch probes: everything that runs inside the training process.

Imports torch, numpy, pyzmq and msgpack only — never textual — so a training job carries no UI
code. The one object most users need is :class:`Monitor`.
"""

from probes.endpoints import DEFAULT_ENDPOINT, EndpointError
from probes.monitor import Monitor
from probes.transport import InProcessTransport, ZmqTransport
from probes.wire import Record, WireError

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
