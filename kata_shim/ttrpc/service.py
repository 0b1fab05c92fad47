"""ttrpc service dispatch: route (service, method) to a handler.

Owns the descriptor types the generated `*_ttrpc.py` modules fill in, the
per-request `RequestContext`, and `Dispatcher`, which decodes the request
payload, runs the handler and encodes the reply (or passes on the `Encoded`
buffers of an encoded handler, for replies too large to copy around). It knows nothing about
sockets or frames; errors leave it as `ShimError` for the server to turn into a
status (see kata_shim.errors).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from kata_shim.errors import InvalidArgument, Unimplemented
from kata_shim.protoparse import DecodeError, parse

__all__ = [
    "Dispatcher",
    "Encoded",
    "EncodedHandler",
    "MethodDesc",
    "PeerCredentials",
    "RequestContext",
    "RpcObserver",
    "ServiceDesc",
]

Handler = Callable[["RequestContext", Any], Awaitable[Message]]

#: Told about every finished call: (service, method, status code, seconds). A plain
#: callable so that the ttrpc core stays free of any metrics library; it must not raise.
RpcObserver = Callable[[str, str, int, float], None]


@dataclass(frozen=True, slots=True)
class Encoded:
    """A reply already encoded: the response message is `parts` concatenated."""

    parts: tuple[bytes | bytearray | memoryview, ...]


EncodedHandler = Callable[["RequestContext", Any], Awaitable[Encoded]]


@dataclass(frozen=True, slots=True)
class MethodDesc:
    """One unary RPC: its wire name and its request/response message classes."""

    name: str
    request_type: type[Message]
    response_type: type[Message]


@dataclass(frozen=True, slots=True)
class ServiceDesc:
    """A proto service: full name (`containerd.task.v2.Task`) and its methods by name."""

    name: str
    methods: Mapping[str, MethodDesc]


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """SO_PEERCRED of the connected peer."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a handler may know about its call besides the request message.

    `deadline` is a `time.monotonic()` instant or None (timeout_nano == 0);
    `metadata` keys are lower-cased and may carry several values.
    """

    service: str
    method: str
    deadline: float | None = None
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    peer: PeerCredentials | None = None


class Dispatcher:
    """Maps (service, method) to a bound handler of a registered implementation."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], tuple[MethodDesc, Handler | EncodedHandler]] = {}
        self._services: set[str] = set()

    def register(self, desc: ServiceDesc, impl: object) -> None:
        """Serve every method of `desc` with the same-named coroutine method of `impl`.

        `impl.encoded_handlers()`, when it exists, maps method names to handlers
        that return `Encoded` replies instead; those take precedence.
        """
        encoded: Mapping[str, EncodedHandler] = getattr(impl, "encoded_handlers", dict)()
        for name, method in desc.methods.items():
            handler = encoded.get(name) or getattr(impl, name)
            self._routes[(desc.name, name)] = (method, handler)
        self._services.add(desc.name)

    def lookup(self, service: str, method: str) -> tuple[MethodDesc, Handler | EncodedHandler]:
        """Return the route or raise Unimplemented the way Go ttrpc words it."""
        route = self._routes.get((service, method))
        if route is not None:
            return route
        if service not in self._services:
            raise Unimplemented(f"service {service}")
        raise Unimplemented(f"method {method}")

    async def dispatch(self, ctx: RequestContext, payload: bytes) -> bytes | Encoded:
        """Decode `payload`, run the handler, and return the encoded response."""
        method, handler = self.lookup(ctx.service, ctx.method)
        request = method.request_type()
        try:
            parse(request, payload)
        except DecodeError as exc:
            raise InvalidArgument(f"cannot decode {method.request_type.__name__}: {exc}") from exc
        response = await handler(ctx, request)
        if isinstance(response, Encoded):
            return response
        encoded: bytes = response.SerializeToString()
        return encoded
