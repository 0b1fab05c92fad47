"""protoc-gen-kata-ttrpc: the generated bases and clients, and the generator itself."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2
from google.protobuf.compiler import plugin_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto, FileDescriptorProto
from google.protobuf.message import Message

from kata_shim import errors
from kata_shim.plugin import protoc_gen_ttrpc
from kata_shim.plugin.regen import protoc_argv
from kata_shim.proto import agent_pb2, agent_ttrpc, task_pb2, task_ttrpc
from kata_shim.ttrpc.service import (
    Dispatcher,
    Encoded,
    RequestContext,
    ZeroCopyField,
    encode_response,
)

REPO = Path(__file__).resolve().parents[2]
TASK_RPCS = {
    "State",
    "Create",
    "Start",
    "Delete",
    "Pids",
    "Pause",
    "Resume",
    "Checkpoint",
    "Kill",
    "Exec",
    "ResizePty",
    "CloseIO",
    "Update",
    "Wait",
    "Stats",
    "Connect",
    "Shutdown",
}
GENERATED = {
    "task": ["TASK_DESC"],
    "events_service": ["EVENTS_DESC"],
    "agent": ["AGENT_SERVICE_DESC"],
    "health": ["HEALTH_DESC"],
}


# --- the checked-in generated modules -------------------------------------------------------


def test_task_base_and_client_have_the_17_rpcs() -> None:
    assert task_ttrpc.TASK_DESC.name == "containerd.task.v2.Task"
    assert set(task_ttrpc.TASK_DESC.methods) == TASK_RPCS
    for name in TASK_RPCS:
        assert asyncio.iscoroutinefunction(getattr(task_ttrpc.TaskBase, name)), name
        assert asyncio.iscoroutinefunction(getattr(task_ttrpc.TaskClient, name)), name
    assert task_ttrpc.TaskBase.DESC is task_ttrpc.TASK_DESC
    wait = task_ttrpc.TASK_DESC.methods["Wait"]
    assert (wait.name, wait.request_type, wait.response_type) == (
        "Wait",
        task_pb2.WaitRequest,
        task_pb2.WaitResponse,
    )
    assert task_ttrpc.TASK_DESC.methods["Kill"].response_type is empty_pb2.Empty


@pytest.mark.parametrize("module", sorted(GENERATED))
def test_descriptors_agree_with_the_proto_services(module: str) -> None:
    """Every service of the .proto is generated, with the right message classes."""
    pb2 = importlib.import_module(f"kata_shim.proto.{module}_pb2")
    ttrpc = importlib.import_module(f"kata_shim.proto.{module}_ttrpc")
    services = pb2.DESCRIPTOR.services_by_name.values()
    assert [protoc_gen_ttrpc.upper_snake(s.name) + "_DESC" for s in services] == GENERATED[module]
    for service in services:
        desc = getattr(ttrpc, protoc_gen_ttrpc.upper_snake(service.name) + "_DESC")
        assert desc.name == service.full_name
        assert list(desc.methods) == [m.name for m in service.methods]
        for method in service.methods:
            entry = desc.methods[method.name]
            assert entry.request_type.DESCRIPTOR is method.input_type
            assert entry.response_type.DESCRIPTOR is method.output_type
            assert getattr(ttrpc, f"{service.name}Base").__dict__[method.name].__doc__
            assert method.name in getattr(ttrpc, f"{service.name}Client").__dict__


class OnlyConnect(task_ttrpc.TaskBase):
    async def Connect(
        self, ctx: RequestContext, request: task_pb2.ConnectRequest
    ) -> task_pb2.ConnectResponse:
        return task_pb2.ConnectResponse(shim_pid=42, task_pid=len(request.id), version="2")


async def dispatch(dispatcher: Dispatcher, ctx: RequestContext, payload: bytes) -> Any:
    """What the server does with a request: route and decode, the handler, encode."""
    method, handler, request = dispatcher.decode(ctx, payload)
    return encode_response(method, await handler(ctx, request))


def test_an_overridden_rpc_is_served_through_the_dispatcher() -> None:
    dispatcher = Dispatcher()
    dispatcher.register(task_ttrpc.TASK_DESC, OnlyConnect())
    ctx = RequestContext("containerd.task.v2.Task", "Connect")
    payload = task_pb2.ConnectRequest(id="abc").SerializeToString()
    reply = task_pb2.ConnectResponse.FromString(asyncio.run(dispatch(dispatcher, ctx, payload)))
    assert (reply.shim_pid, reply.task_pid, reply.version) == (42, 3, "2")


def test_rpcs_not_overridden_answer_unimplemented() -> None:
    dispatcher = Dispatcher()
    dispatcher.register(task_ttrpc.TASK_DESC, OnlyConnect())
    ctx = RequestContext("containerd.task.v2.Task", "State")
    with pytest.raises(errors.Unimplemented, match=r"^method State$") as caught:
        asyncio.run(dispatch(dispatcher, ctx, task_pb2.StateRequest(id="x").SerializeToString()))
    assert caught.value.code == errors.Code.UNIMPLEMENTED
    with pytest.raises(errors.Unimplemented, match="method Shutdown"):
        asyncio.run(OnlyConnect().Shutdown(ctx, task_pb2.ShutdownRequest()))


class RecordingClient:
    """Stands in for kata_shim.ttrpc.client.Client: records `call` and answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[Message],
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Message:
        self.calls.append((service, method, request, response_type, timeout, metadata))
        return response_type()


def test_the_client_delegates_to_call() -> None:
    recorder = RecordingClient()
    client = task_ttrpc.TaskClient(recorder)  # type: ignore[arg-type]
    request = task_pb2.WaitRequest(id="c1")
    reply = asyncio.run(client.Wait(request, timeout=2.5, metadata={"k": "v"}))
    assert isinstance(reply, task_pb2.WaitResponse)
    reply2 = asyncio.run(client.Kill(task_pb2.KillRequest(id="c1", signal=9)))
    assert isinstance(reply2, empty_pb2.Empty)
    assert recorder.calls[0] == (
        "containerd.task.v2.Task",
        "Wait",
        request,
        task_pb2.WaitResponse,
        2.5,
        {"k": "v"},
    )
    assert recorder.calls[1][1:] == (
        "Kill",
        task_pb2.KillRequest(id="c1", signal=9),
        empty_pb2.Empty,
        None,
        None,
    )


def test_generated_modules_do_not_import_the_client_at_run_time() -> None:
    code = (
        "import sys\n"
        "from kata_shim.proto import agent_ttrpc, events_service_ttrpc, health_ttrpc, task_ttrpc\n"
        "assert 'kata_shim.ttrpc.client' not in sys.modules, 'client imported'\n"
        "assert 'asyncio' not in sys.modules, 'asyncio imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=_env(REPO)
    )
    assert result.returncode == 0, result.stderr


# --- the generator, on hand-made requests ---------------------------------------------------

T = FieldDescriptorProto


def _file(
    name: str, package: str, messages: list[str], deps: list[str] = ()
) -> FileDescriptorProto:
    proto = FileDescriptorProto(name=name, package=package, syntax="proto3", dependency=deps)
    for message in messages:
        outer, _, inner = message.partition(".")
        found = [m for m in proto.message_type if m.name == outer]
        parent = found[0] if found else proto.message_type.add(name=outer)
        if inner:
            parent.nested_type.add(name=inner)
    return proto


def _request(*files: FileDescriptorProto, generate: list[str] | None = None):
    return plugin_pb2.CodeGeneratorRequest(
        file_to_generate=generate if generate is not None else [files[-1].name],
        proto_file=files,
    )


def _demo() -> list[FileDescriptorProto]:
    a = _file("x/a/types.proto", "x.a", ["Req"])
    b = _file("y/types.proto", "y", ["Resp"])
    svc = _file("demo/svc.proto", "demo.v1", ["Outer.Inner"], [a.name, b.name])
    service = svc.service.add(name="EchoService")
    service.method.add(name="Ping", input_type=".x.a.Req", output_type=".y.Resp")
    service.method.add(name="Nested", input_type=".demo.v1.Outer.Inner", output_type=".y.Resp")
    return [a, b, svc]


def test_generator_output_for_a_service() -> None:
    response = protoc_gen_ttrpc.generate(_request(*_demo()))
    assert response.error == ""
    assert response.supported_features & plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    [out] = response.file
    assert out.name == "demo/svc_ttrpc.py"
    text = out.content
    assert text.startswith("# Generated by protoc-gen-kata-ttrpc. DO NOT EDIT.\n")
    assert "# source: demo/svc.proto\n" in text
    # Two modules named types_pb2: both aliased by their dotted path.
    assert "from x.a import types_pb2 as x_a_types_pb2\n" in text
    assert "from y import types_pb2 as y_types_pb2\n" in text
    assert "from demo import svc_pb2\n" in text
    assert 'name="demo.v1.EchoService"' in text
    assert "ECHO_SERVICE_DESC = ServiceDesc(" in text
    assert "class EchoServiceBase(abc.ABC):" in text and "class EchoServiceClient:" in text
    assert '"Nested": MethodDesc("Nested", svc_pb2.Outer.Inner, y_types_pb2.Resp)' in text
    assert 'raise Unimplemented("method Ping")' in text
    assert "if TYPE_CHECKING:\n    from kata_shim.ttrpc.client import Client\n" in text
    compile(text, out.name, "exec")
    assert max(len(line) for line in text.splitlines()) <= 100


def test_a_proto_at_the_include_root_is_imported_plainly() -> None:
    root = _file("echo.proto", "", ["Msg"])
    root.service.add(name="Echo").method.add(name="Say", input_type=".Msg", output_type=".Msg")
    [out] = protoc_gen_ttrpc.generate(_request(root)).file
    assert "\nimport echo_pb2\n" in out.content
    assert 'name="Echo"' in out.content and "EchoBase" in out.content
    compile(out.content, out.name, "exec")


def test_generator_is_deterministic() -> None:
    first = protoc_gen_ttrpc.generate(_request(*_demo())).SerializeToString(deterministic=True)
    second = protoc_gen_ttrpc.generate(_request(*_demo())).SerializeToString(deterministic=True)
    assert first == second


def test_files_without_services_or_not_requested_produce_nothing() -> None:
    files = _demo()
    assert list(protoc_gen_ttrpc.generate(_request(*files, generate=["y/types.proto"])).file) == []
    assert list(protoc_gen_ttrpc.generate(_request(*files, generate=[])).file) == []


def test_grpc_only_files_produce_nothing() -> None:
    files = _demo()
    request = _request(*files)
    request.parameter = "grpc_only=other.proto,grpc_only=demo/svc.proto"
    assert list(protoc_gen_ttrpc.generate(request).file) == []
    request.parameter = "grpc_only=other.proto"
    assert [f.name for f in protoc_gen_ttrpc.generate(request).file] == ["demo/svc_ttrpc.py"]
    request.parameter = "bogus"
    assert "unknown plugin parameter 'bogus'" in protoc_gen_ttrpc.generate(request).error
    request.parameter = "zero_copy="
    assert "unknown plugin parameter 'zero_copy='" in protoc_gen_ttrpc.generate(request).error


@pytest.mark.parametrize("streaming", ["client_streaming", "server_streaming"])
def test_streaming_rpcs_are_refused(streaming: str) -> None:
    files = _demo()
    setattr(files[-1].service[0].method[0], streaming, True)
    response = protoc_gen_ttrpc.generate(_request(*files))
    assert "demo.v1.EchoService/Ping: streaming RPCs are not supported" in response.error
    assert list(response.file) == []


def test_unknown_types_and_keyword_names_are_refused() -> None:
    files = _demo()
    files[-1].service[0].method[0].input_type = ".nowhere.Req"
    assert "unknown message type .nowhere.Req" in protoc_gen_ttrpc.generate(_request(*files)).error
    files = _demo()
    files[-1].service[0].method[0].name = "import"
    assert "Python keyword" in protoc_gen_ttrpc.generate(_request(*files)).error


def test_upper_snake() -> None:
    assert protoc_gen_ttrpc.upper_snake("AgentService") == "AGENT_SERVICE"
    assert protoc_gen_ttrpc.upper_snake("Task") == "TASK"
    assert protoc_gen_ttrpc.upper_snake("Events") == "EVENTS"


# --- the generator under protoc, end to end --------------------------------------------------

DEMO_PROTO = """\
syntax = "proto3";
package demo.v1;
import "google/protobuf/empty.proto";
message Ping { string text = 1; optional uint32 count = 2; message Detail { bool ok = 1; } }
service Echo {
  rpc Say(Ping) returns (Ping);
  rpc Check(Ping.Detail) returns (google.protobuf.Empty);
}
"""


def _env(path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(REPO)]))


def test_protoc_runs_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "echo.proto").write_text(DEMO_PROTO)
    launcher = tmp_path / "protoc-gen-kata-ttrpc"
    launcher.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m kata_shim.plugin.protoc_gen_ttrpc\n'
    )
    launcher.chmod(0o755)
    cmd = [
        *protoc_argv(),
        f"-I{tmp_path}",
        f"--python_out={tmp_path}",
        f"--plugin=protoc-gen-kata-ttrpc={launcher}",
        f"--kata-ttrpc_out={tmp_path}",
        "demo/echo.proto",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_env(REPO))
    assert result.returncode == 0, result.stderr
    code = (
        "import asyncio\n"
        "from demo import echo_pb2, echo_ttrpc\n"
        "d = echo_ttrpc.ECHO_DESC\n"
        "assert d.name == 'demo.v1.Echo' and list(d.methods) == ['Say', 'Check']\n"
        "assert d.methods['Check'].request_type is echo_pb2.Ping.Detail\n"
        "class Impl(echo_ttrpc.EchoBase):\n"
        "    async def Say(self, ctx, request):\n"
        "        return echo_pb2.Ping(text=request.text * 2)\n"
        "print(asyncio.run(Impl().Say(None, echo_pb2.Ping(text='ab'))).text)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path)
    )
    assert (run.returncode, run.stdout) == (0, "abab\n"), run.stderr


ZERO_COPY_PROTO = """\
syntax = "proto3";
package demo.v1;
message Want { uint32 len = 1; }
message Chunk { bytes data = 1; }
service Stream { rpc Read(Want) returns (Chunk); }
"""

ZERO_COPY_RUN = """\
import asyncio, os, sys, tempfile
from demo import zc_pb2, zc_ttrpc
from kata_shim.ttrpc.client import Client
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher

class Impl(zc_ttrpc.StreamBase):
    async def Read(self, ctx, request):
        return b"z" * request.len

async def main():
    dispatcher = Dispatcher()
    dispatcher.register(zc_ttrpc.STREAM_DESC, Impl())
    server = Server(dispatcher)
    path = os.path.join(tempfile.mkdtemp(), "s.sock")
    await server.serve_unix(path)
    client = await Client.connect_unix(path)
    stub = zc_ttrpc.StreamClient(client)
    views = [await stub.Read(zc_pb2.Want(len=n)) for n in (3, 0, 70000)]
    assert all(type(v) is memoryview for v in views), views
    generic = await client.call("demo.v1.Stream", "Read", zc_pb2.Want(len=2), zc_pb2.Chunk)
    client.close()
    server.close()
    print([len(v) for v in views], bytes(views[0]), generic.data)

asyncio.run(main())
"""


def test_protoc_runs_the_plugin_with_zero_copy(tmp_path: Path) -> None:
    """protoc + the option, then a real server and client: views out, protobuf on the wire."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "zc.proto").write_text(ZERO_COPY_PROTO)
    launcher = tmp_path / "protoc-gen-kata-ttrpc"
    launcher.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m kata_shim.plugin.protoc_gen_ttrpc\n'
    )
    launcher.chmod(0o755)
    cmd = [
        *protoc_argv(),
        f"-I{tmp_path}",
        f"--python_out={tmp_path}",
        f"--plugin=protoc-gen-kata-ttrpc={launcher}",
        f"--kata-ttrpc_out={tmp_path}",
        "--kata-ttrpc_opt=zero_copy=demo.v1.Chunk.data",
        "demo/zc.proto",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_env(REPO))
    assert result.returncode == 0, result.stderr
    run = subprocess.run(
        [sys.executable, "-c", ZERO_COPY_RUN], capture_output=True, text=True, env=_env(tmp_path)
    )
    assert (run.returncode, run.stdout) == (0, "[3, 0, 70000] b'zzz' b'zz'\n"), run.stderr


def test_plugin_main_speaks_the_protoc_protocol() -> None:
    request = _request(*_demo()).SerializeToString()
    result = subprocess.run(
        [sys.executable, "-m", "kata_shim.plugin.protoc_gen_ttrpc"],
        input=request,
        capture_output=True,
        env=_env(REPO),
    )
    assert result.returncode == 0, result.stderr
    response = plugin_pb2.CodeGeneratorResponse.FromString(result.stdout)
    assert [f.name for f in response.file] == ["demo/svc_ttrpc.py"]


# --- the zero_copy option ---------------------------------------------------------------------


def test_read_stream_data_is_generated_as_a_zero_copy_field() -> None:
    """regen.ZERO_COPY marks ReadStreamResponse.data: ReadStdout/ReadStderr use it, no other."""
    field = agent_ttrpc.READ_STREAM_RESPONSE_DATA
    assert field == ZeroCopyField(agent_pb2.ReadStreamResponse, 1)
    assert agent_pb2.ReadStreamResponse.DESCRIPTOR.fields_by_name["data"].number == field.number
    methods = agent_ttrpc.AGENT_SERVICE_DESC.methods
    assert {n for n, m in methods.items() if m.zero_copy is not None} == {
        "ReadStdout",
        "ReadStderr",
    }
    assert methods["ReadStdout"].zero_copy is field


class Reader(agent_ttrpc.AgentServiceBase):
    async def ReadStdout(self, ctx: RequestContext, request: agent_pb2.ReadStreamRequest) -> bytes:
        return b"out:" + request.container_id.encode() if request.len else b""

    async def ReadStderr(
        self, ctx: RequestContext, request: agent_pb2.ReadStreamRequest
    ) -> agent_pb2.ReadStreamResponse:
        return agent_pb2.ReadStreamResponse(data=b"a message, not bytes")  # a handler bug


def _dispatch(method: str, request: Message) -> Any:
    dispatcher = Dispatcher()
    dispatcher.register(agent_ttrpc.AGENT_SERVICE_DESC, Reader())
    ctx = RequestContext("grpc.AgentService", method)
    return asyncio.run(dispatch(dispatcher, ctx, request.SerializeToString()))


def test_a_zero_copy_rpc_is_served_through_the_dispatcher() -> None:
    """The typed handler returns the bytes; the reply is header + that very buffer."""
    reply = _dispatch("ReadStdout", agent_pb2.ReadStreamRequest(container_id="c1", len=9))
    assert isinstance(reply, Encoded) and len(reply.parts) == 2
    assert bytes(reply.parts[1]) == b"out:c1"
    parsed = agent_pb2.ReadStreamResponse.FromString(b"".join(reply.parts))
    assert parsed.data == b"out:c1"
    eof = _dispatch("ReadStdout", agent_pb2.ReadStreamRequest(container_id="c1"))
    assert eof == Encoded(())  # empty data: the empty message (EOF)


def test_a_zero_copy_handler_returning_a_message_is_an_error() -> None:
    with pytest.raises(TypeError):
        _dispatch("ReadStderr", agent_pb2.ReadStreamRequest(container_id="c1"))


def test_the_zero_copy_field_decodes_views_and_rejects_garbage() -> None:
    field = agent_ttrpc.READ_STREAM_RESPONSE_DATA
    encoded = agent_pb2.ReadStreamResponse(data=b"chunk").SerializeToString()
    view = field.decode(memoryview(encoded))
    assert isinstance(view, memoryview) and view.obj is encoded and bytes(view) == b"chunk"
    assert bytes(field.decode(b"")) == b""
    with pytest.raises(errors.Unavailable, match="cannot decode ReadStreamResponse"):
        field.decode(b"\x0a\x05ab")  # truncated


class ZeroCopyRecorder(RecordingClient):
    async def call_zero_copy(self, service, method, request, field, *, timeout=None, metadata=None):
        self.calls.append((service, method, request, field, timeout, metadata))
        return memoryview(b"data")


def test_the_generated_client_returns_the_zero_copy_field() -> None:
    recorder = ZeroCopyRecorder()
    client = agent_ttrpc.AgentServiceClient(recorder)  # type: ignore[arg-type]
    request = agent_pb2.ReadStreamRequest(container_id="c1", len=10)
    assert bytes(asyncio.run(client.ReadStderr(request, timeout=3))) == b"data"
    assert recorder.calls == [
        ("grpc.AgentService", "ReadStderr", request, agent_ttrpc.READ_STREAM_RESPONSE_DATA, 3, None)
    ]


def _zero_copy_demo(
    field_type: int = T.TYPE_BYTES, extra: bool = False
) -> list[FileDescriptorProto]:
    files = _demo()
    chunk = files[1].message_type.add(name="Chunk")
    chunk.field.add(name="data", number=3, type=field_type, label=T.LABEL_OPTIONAL)
    if extra:
        chunk.field.add(name="more", number=4, type=T.TYPE_BOOL, label=T.LABEL_OPTIONAL)
    files[-1].service[0].method.add(name="Read", input_type=".x.a.Req", output_type=".y.Chunk")
    return files


def test_generator_output_with_zero_copy() -> None:
    request = _request(*_zero_copy_demo())
    request.parameter = "zero_copy=y.Chunk.data,grpc_only=other.proto"
    response = protoc_gen_ttrpc.generate(request)
    assert response.error == ""
    text = response.file[0].content
    assert "CHUNK_DATA = ZeroCopyField(y_types_pb2.Chunk, 3)\n" in text
    assert "from kata_shim.ttrpc.service import (\n    Buffer," in text or (
        "import Buffer, MethodDesc, RequestContext, ServiceDesc, ZeroCopyField\n" in text
    )
    assert "zero_copy=CHUNK_DATA" in text
    assert "request: x_a_types_pb2.Req) -> Buffer:" in text
    assert ") -> memoryview:" in text and "self._client.call_zero_copy(" in text
    assert '"CHUNK_DATA"' in text  # exported
    assert text.count("zero_copy=") == 1  # Ping and Nested stay generic
    compile(text, "svc_ttrpc.py", "exec")
    assert max(len(line) for line in text.splitlines()) <= 100
    # without the option the same files generate no zero-copy code at all
    plain = protoc_gen_ttrpc.generate(_request(*_zero_copy_demo())).file[0].content
    assert "ZeroCopyField" not in plain and "Buffer" not in plain


@pytest.mark.parametrize(
    ("target", "files", "message"),
    [
        ("y.Nope.data", _zero_copy_demo(), "zero_copy=y.Nope.data: no message y.Nope"),
        ("y.Chunk.nope", _zero_copy_demo(), "y.Chunk has no field nope"),
        ("y.Chunk.data", _zero_copy_demo(T.TYPE_STRING), "not a singular bytes field"),
        ("y.Chunk.data", _zero_copy_demo(extra=True), "y.Chunk has other fields"),
        ("data", _zero_copy_demo(), "zero_copy=data: no message data"),
    ],
)
def test_bad_zero_copy_options_are_refused(
    target: str, files: list[FileDescriptorProto], message: str
) -> None:
    request = _request(*files)
    request.parameter = f"zero_copy={target}"
    response = protoc_gen_ttrpc.generate(request)
    assert message in response.error and list(response.file) == []


def test_a_repeated_bytes_field_is_not_zero_copy() -> None:
    files = _zero_copy_demo()
    files[1].message_type[-1].field[0].label = T.LABEL_REPEATED
    request = _request(*files)
    request.parameter = "zero_copy=y.Chunk.data"
    assert "not a singular bytes field" in protoc_gen_ttrpc.generate(request).error
