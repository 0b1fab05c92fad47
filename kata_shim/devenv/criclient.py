"""A small CRI (Kubernetes runtime.v1) client over gRPC, for tests against containerd's CRI plugin.

crictl is not packaged in Debian 12, so tests use this instead. Each call is a
unary gRPC call made with grpcio's generic `channel.unary_unary(path, ...)`
and our own subset of the API (kata_shim/proto/cri.proto, generated like our
other protos); no generated gRPC stubs. A failed call raises `CriError`
carrying the gRPC status code name and containerd's message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]

from kata_shim.proto import cri_pb2

__all__ = ["CriClient", "CriError", "container_config", "pod_config"]

RUNTIME = "/runtime.v1.RuntimeService/"
IMAGE = "/runtime.v1.ImageService/"
RUN_POD_TIMEOUT = 300.0  # seconds for RunPodSandbox (a VM boot under TCG, under load)


class CriError(RuntimeError):
    """A CRI call failed: `code` is the gRPC status code name (e.g. NOT_FOUND)."""

    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.code = code
        self.details = details


class CriClient:
    """RuntimeService and ImageService calls on one unix-socket channel."""

    def __init__(self, socket_path: str, *, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")

    def call(
        self, path: str, request: Any, response_type: Any, timeout: float | None = None
    ) -> Any:
        """One unary call, e.g. ("/runtime.v1.RuntimeService/Version", request, VersionResponse)."""
        method = self._channel.unary_unary(
            path,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise CriError(path.rpartition("/")[2], exc.code().name, exc.details()) from None

    def _runtime(self, name: str, request: Any, timeout: float | None = None) -> Any:
        return self.call(RUNTIME + name, request, getattr(cri_pb2, f"{name}Response"), timeout)

    def version(self) -> Any:
        return self._runtime("Version", cri_pb2.VersionRequest(version="v1"))

    def run_pod(self, config: Any, handler: str) -> str:
        request = cri_pb2.RunPodSandboxRequest(config=config, runtime_handler=handler)
        # a VM pod boots under TCG on a busy 2-CPU host: give it more than other calls
        timeout = max(self.timeout, RUN_POD_TIMEOUT)
        return str(self._runtime("RunPodSandbox", request, timeout).pod_sandbox_id)

    def stop_pod(self, pod_id: str) -> None:
        self._runtime("StopPodSandbox", cri_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))

    def remove_pod(self, pod_id: str) -> None:
        self._runtime("RemovePodSandbox", cri_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    def pod_status(self, pod_id: str) -> Any:
        request = cri_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
        return self._runtime("PodSandboxStatus", request).status

    def pod_info(self, pod_id: str) -> dict[str, Any]:
        """containerd's verbose PodSandboxStatus `info` JSON (`runtimeSpec`, `config`, ...)."""
        request = cri_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
        info: dict[str, Any] = json.loads(self._runtime("PodSandboxStatus", request).info["info"])
        return info

    def list_pods(self) -> Sequence[Any]:
        return list(self._runtime("ListPodSandbox", cri_pb2.ListPodSandboxRequest()).items)

    def create_container(self, pod_id: str, config: Any, pod_config: Any) -> str:
        request = cri_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config
        )
        return str(self._runtime("CreateContainer", request).container_id)

    def start_container(self, container_id: str) -> None:
        request = cri_pb2.StartContainerRequest(container_id=container_id)
        self._runtime("StartContainer", request)

    def stop_container(self, container_id: str, timeout: int = 10) -> None:
        request = cri_pb2.StopContainerRequest(container_id=container_id, timeout=timeout)
        self._runtime("StopContainer", request, timeout=timeout + self.timeout)

    def remove_container(self, container_id: str) -> None:
        request = cri_pb2.RemoveContainerRequest(container_id=container_id)
        self._runtime("RemoveContainer", request)

    def list_containers(self, pod_id: str = "") -> Sequence[Any]:
        request = cri_pb2.ListContainersRequest(
            filter=cri_pb2.ContainerFilter(pod_sandbox_id=pod_id)
        )
        return list(self._runtime("ListContainers", request).containers)

    def container_status(self, container_id: str) -> Any:
        request = cri_pb2.ContainerStatusRequest(container_id=container_id)
        return self._runtime("ContainerStatus", request).status

    def exec_sync(self, container_id: str, cmd: Sequence[str], timeout: int = 30) -> Any:
        """Run `cmd` in the container; the response has stdout, stderr and exit_code."""
        request = cri_pb2.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        return self._runtime("ExecSync", request, timeout=timeout + self.timeout)

    def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        stdin: bool = False,
        tty: bool = False,
        stderr: bool = True,
    ) -> str:
        """Exec: the streaming server's URL for `cmd` (open it with kata_shim.devenv.criexec)."""
        request = cri_pb2.ExecRequest(
            container_id=container_id,
            cmd=list(cmd),
            tty=tty,
            stdin=stdin,
            stdout=True,
            stderr=stderr and not tty,  # CRI: no separate stderr with a tty
        )
        return str(self._runtime("Exec", request).url)

    def attach(self, container_id: str, *, stdin: bool = True, tty: bool = False) -> str:
        """Attach: the streaming server's URL for the container's own stdio."""
        request = cri_pb2.AttachRequest(
            container_id=container_id, stdin=stdin, tty=tty, stdout=True, stderr=not tty
        )
        return str(self._runtime("Attach", request).url)

    def wait_container_state(self, container_id: str, state: int, timeout: float = 60.0) -> Any:
        """Poll ContainerStatus until the state is `state` (a cri_pb2.ContainerState value)."""
        return _poll_state(lambda: self.container_status(container_id), state, timeout)

    def wait_pod_state(self, pod_id: str, state: int, timeout: float = 60.0) -> Any:
        """Poll PodSandboxStatus until the state is `state` (a cri_pb2.PodSandboxState value)."""
        return _poll_state(lambda: self.pod_status(pod_id), state, timeout)

    def update_container_resources(self, container_id: str, resources: Any) -> None:
        """UpdateContainerResources with `resources` (a LinuxContainerResources)."""
        request = cri_pb2.UpdateContainerResourcesRequest(
            container_id=container_id, linux=resources
        )
        self._runtime("UpdateContainerResources", request)

    def container_stats(self, container_id: str) -> Any:
        request = cri_pb2.ContainerStatsRequest(container_id=container_id)
        return self._runtime("ContainerStats", request).stats

    def pod_stats(self, pod_id: str) -> Any:
        request = cri_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod_id)
        return self._runtime("PodSandboxStats", request).stats

    def image_status(self, image: str) -> Any:
        request = cri_pb2.ImageStatusRequest(image=cri_pb2.ImageSpec(image=image))
        return self.call(IMAGE + "ImageStatus", request, cri_pb2.ImageStatusResponse).image

    def list_images(self) -> Sequence[Any]:
        response = self.call(
            IMAGE + "ListImages", cri_pb2.ListImagesRequest(), cri_pb2.ListImagesResponse
        )
        return list(response.images)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pod_config(
    name: str,
    uid: str,
    *,
    log_directory: str = "",
    hostname: str = "",
    labels: Mapping[str, str] | None = None,
) -> Any:
    """A PodSandboxConfig in namespace `default` (metadata, hostname, log directory)."""
    return cri_pb2.PodSandboxConfig(
        metadata=cri_pb2.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
        hostname=hostname or name,
        log_directory=log_directory,
        labels=dict(labels or {}),
    )


def container_config(
    name: str,
    image: str,
    args: Sequence[str],
    *,
    log_path: str = "",
    stdin: bool = False,
    stdin_once: bool = False,
    tty: bool = False,
) -> Any:
    """A ContainerConfig running `args` (as the command) from `image`.

    `stdin` keeps the container's stdin open for Attach; with `stdin_once` CRI
    closes it when the first attach session ends.
    """
    return cri_pb2.ContainerConfig(
        metadata=cri_pb2.ContainerMetadata(name=name),
        image=cri_pb2.ImageSpec(image=image),
        command=list(args),
        log_path=log_path,
        stdin=stdin,
        stdin_once=stdin_once,
        tty=tty,
    )


def _poll_state(read: Callable[[], Any], state: int, timeout: float) -> Any:
    """The status `read` returns once its state is `state`, or the last one after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        status = read()
        if status.state == state or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
