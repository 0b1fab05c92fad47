"""ttrpc service dispatch: route (service, method) to a handler.

Owns the descriptor types the generated `*_ttrpc.py` modules fill in, the
per-request `RequestContext`, and `Dispatcher`, which decodes the request
payload, runs the handler and encodes the reply. A handler marked `inline`
never waits: the server runs it where the request arrived, with no task. A
method whose MethodDesc has a `zero_copy` field (the protoc plugin's
`zero_copy` option) returns the bytes of that one field; the reply leaves as
`Encoded` buffers (header, data) that are never joined or copied. It knows
nothing about sockets or frames; errors leave it as `ShimError` for the server
to turn into a status (see kata_shim.errors).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import Message

from kata_shim.errors import InvalidArgument, Unavailable, Unimplemented
from kata_shim.pbwire import WireError, last_len_field, len_field_header
from kata_shim.protoparse import DecodeError, parse

__all__ = [
    "Buffer",
    "Dispatcher",
    "Encoded",
    "MethodDesc",
    "PeerCredentials",
    "RequestContext",
    "RpcObserver",
    "ServiceDesc",
    "ZeroCopyField",
    "encode_response",
    "inline",
]

Buffer = bytes | bytearray | memoryview
#: a handler returns the response message, or the field's bytes for a zero-copy method
Handler = Callable[["RequestContext", Any], Awaitable[Any]]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_INLINE = "__ttrpc_inline__"


def inline(handler: F) -> F:
    """Mark a handler that answers without waiting (reads state, builds the reply). The
    server then runs it to completion in the loop callback that read the request: no
    task, no extra turn of the loop. Should it wait after all, the server finishes it in a
    task; until that first wait `asyncio.current_task()` is None, so an inline handler must
    not enter `asyncio.timeout` or a TaskGroup."""
    setattr(handler, _INLINE, True)
    return handler


#: Told about every finished call: (service, method, status code, seconds). A plain
#: callable so that the ttrpc core stays free of any metrics library; it must not raise.
RpcObserver = Callable[[str, str, int, float], None]


@dataclass(frozen=True, slots=True)
class Encoded:
    """A reply already encoded: the response message is `parts` concatenated."""

    parts: tuple[Buffer, ...]


@dataclass(frozen=True, slots=True)
class ZeroCopyField:
    """A response message whose one field, `bytes` number `number`, travels uncopied.

    The generated code of the protoc plugin's `zero_copy` option uses it on both
    sides: the server sends the tag and length, then the handler's buffer itself;
    the client gets the field as a view into the received frame. protobuf's Python
    API cannot serialize or parse a bytes field without copying it.
    """

    response_type: type[Message]
    number: int

    def encode(self, data: Buffer) -> Encoded:
        """The response holding `data`; empty data is the empty message (proto3)."""
        with memoryview(data) as view:  # TypeError for anything but a bytes-like object
            size = view.nbytes
        return Encoded((len_field_header(self.number, size), data) if size else ())

    def decode(self, payload: bytes | memoryview) -> memoryview:
        """The field's value in an encoded response (its last occurrence), as a view."""
        try:
            return last_len_field(payload, self.number)
        except WireError as exc:
            raise Unavailable(f"cannot decode {self.response_type.__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class MethodDesc:
    """One unary RPC: its wire name, its request/response message classes and, for a
    zero-copy response (protoc plugin option), the field that travels uncopied."""

    name: str
    request_type: type[Message]
    response_type: type[Message]
    zero_copy: ZeroCopyField | None = None


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
        self._routes: dict[tuple[str, str], tuple[MethodDesc, Handler]] = {}
        self._inline: set[tuple[str, str]] = set()
        self._services: set[str] = set()

    def register(self, desc: ServiceDesc, impl: object) -> None:
        """Serve every method of `desc` with the same-named coroutine method of `impl`
        (`inline` ones are noted)."""
        for name, method in desc.methods.items():
            handler = getattr(impl, name)
            self._routes[(desc.name, name)] = (method, handler)
            if getattr(handler, _INLINE, False):
                self._inline.add((desc.name, name))
        self._services.add(desc.name)

    def is_inline(self, service: str, method: str) -> bool:
        """Whether the handler of (service, method) is marked `inline`."""
        return (service, method) in self._inline

    def lookup(self, service: str, method: str) -> tuple[MethodDesc, Handler]:
        """Return the route or raise Unimplemented the way Go ttrpc words it."""
        route = self._routes.get((service, method))
        if route is not None:
            return route
        if service not in self._services:
            raise Unimplemented(f"service {service}")
        raise Unimplemented(f"method {method}")

    def decode(self, ctx: RequestContext, payload: bytes) -> tuple[MethodDesc, Handler, Any]:
        """The route of `ctx` and `payload` decoded as its request (the server then awaits the
        handler and encodes its response with `encode_response`)."""
        method, handler = self.lookup(ctx.service, ctx.method)
        request = method.request_type()
        try:
            parse(request, payload)
        except DecodeError as exc:
            raise InvalidArgument(f"cannot decode {method.request_type.__name__}: {exc}") from exc
        return method, handler, request


def encode_response(method: MethodDesc, response: Any) -> bytes | Encoded:
    """A handler's response as bytes (or zero-copy parts)."""
    if method.zero_copy is not None:
        return method.zero_copy.encode(response)
    encoded: bytes = response.SerializeToString()
    return encoded
