"""ttrpc for kata-shim: framing (wire), streams (connection), dispatch (service), asyncio IO.

Import the asyncio parts from their modules (`kata_shim.ttrpc.server`,
`kata_shim.ttrpc.client`); this façade re-exports only the sans-IO names so that
importing it never pulls in asyncio.
"""

from kata_shim.ttrpc.service import (
    Dispatcher,
    MethodDesc,
    PeerCredentials,
    RequestContext,
    ServiceDesc,
)
from kata_shim.ttrpc.wire import MAX_PAYLOAD, FrameType, ProtocolError

__all__ = [
    "MAX_PAYLOAD",
    "Dispatcher",
    "FrameType",
    "MethodDesc",
    "PeerCredentials",
    "ProtocolError",
    "RequestContext",
    "ServiceDesc",
]
