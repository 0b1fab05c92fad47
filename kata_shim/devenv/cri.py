"""A private containerd with its CRI plugin enabled, inside a network namespace of its own.

`CriRig` owns, under one scratch directory whose name carries a unique marker:
  * a network namespace `<marker>` (made with `ip netns add`; lo up), in which
    containerd runs (`nsenter --net=`, so /sys and the cgroup mounts stay the
    host's). The CNI bridge, every pod netns and all pod traffic live there;
  * a containerd config with the CRI plugin and three runtime handlers:
    `runc` (containerd-shim-runc-v2), `kata` (our shim, its default config:
    $KATA_CONF_FILE in containerd's environment when the rig has a VM config)
    and `kata-local` (our shim, `ConfigPath` = a local-sandbox configuration);
  * CRI's streaming server (the URLs of Exec/Attach) on 127.0.0.1 of that
    netns, plain HTTP, on a port the kernel picks (containerd puts the bound
    port in the URLs); `stream_connect` reaches it from the test process;
  * a CNI conflist (bridge + host-local with its data dir in the scratch dir;
    CRI adds loopback) using Debian's plugins in /usr/lib/cni;
  * the pause and busybox OCI images (kata_shim.devenv.ociimage) imported
    into the `k8s.io` namespace; the pause image is the `sandbox_image`.

`close()` works after any failure: every pod is stopped and removed through
CRI, containerd is stopped by PID, leftover processes carrying the marker are
killed by PID, mounts below the scratch dir are unmounted, the netns, CNI's
result cache entries for our network and the scratch dir are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from kata_shim import mounts
from kata_shim.devenv import ociimage
from kata_shim.devenv.criclient import CriClient
from kata_shim.devenv.shim import KataContainerd, install_shim, processes_matching, scratch_setup
from kata_shim.devenv.shim import write_config as write_shim_config
from kata_shim.network.netns import run_in_netns

__all__ = ["CNI_BIN_DIR", "HANDLERS", "CriContainerd", "CriRig", "cri_config"]

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CNI_CACHE = Path("/var/lib/cni/results")  # libcni's cache (not configurable in containerd 1.6)
HANDLERS = ("runc", "kata", "kata-local")
SUBNET = "10.88.0.0/16"  # exists only inside the rig's network namespace
K8S_NAMESPACE = "k8s.io"
#: pod annotations containerd passes to our shim: Kata's and openEuler's sizing (sandbox/sizing.py)
POD_ANNOTATIONS = ("io.katacontainers.*", "com.github.containers.virtcontainers.*")
#: the VM config's enable_annotations (Kata's rule: nothing under io.katacontainers... without)
ENABLE_ANNOTATIONS = ("default_vcpus", "default_memory")
#: [runtime] of both configs, Kubernetes' setup: the VM and the shim in the pod's cgroup
POD_CGROUP = "sandbox_cgroup_only = true\n"

_CRI = """
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox_image}"
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_tls_streaming = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
        runtime_type = "io.containerd.kata.v2"
        pod_annotations = {pod_annotations}
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-local]
        runtime_type = "io.containerd.kata.v2"
        pod_annotations = {pod_annotations}
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-local.options]
          ConfigPath = "{local_config}"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{cni_bin}"
      conf_dir = "{cni_conf}"
      max_conf_num = 1
"""


def cri_config(*, sandbox_image: str, local_config: Path, cni_conf: Path) -> str:
    """The CRI plugin section of containerd's config.toml (the three handlers, CNI)."""
    return _CRI.format(
        sandbox_image=sandbox_image,
        local_config=local_config,
        cni_bin=CNI_BIN_DIR,
        cni_conf=cni_conf,
        pod_annotations=json.dumps(list(POD_ANNOTATIONS)),
    )


def write_vm_config(path: Path, state_dir: Path, guest_image: Path, *, extra: str) -> None:
    """The `kata` handler's configuration: QEMU with the test guest image, sizing annotations."""
    keys: dict[str, str | Sequence[str]] = {
        "enable_annotations": list(ENABLE_ANNOTATIONS),
        "kernel": str(guest_image / "vmlinux"),
        "initrd": str(guest_image / "kata-shim-initrd.img"),
        "accel": "auto",
    }
    write_shim_config(
        path,
        state_dir=state_dir,
        hypervisor="qemu",
        hypervisor_keys=keys,
        dial_timeout=120,  # VMs boot slowly under TCG
        extra=extra,
    )


def cni_conflist(name: str, ipam_dir: Path) -> dict[str, object]:
    """A bridge network (gateway on the bridge, no masquerade) with host-local IPAM."""
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": SUBNET}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": str(ipam_dir),
    }
    bridge = {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "ipam": ipam}
    return {"cniVersion": "1.0.0", "name": name, "plugins": [bridge]}


class CriContainerd(KataContainerd):
    """A KataContainerd with the CRI plugin enabled, run inside network namespace `netns`."""

    def __init__(self, workdir: str, *, netns: Path, cri_section: str, env: dict[str, str]) -> None:
        super().__init__(workdir, env=env)
        self.netns = netns
        self.cri_section = cri_section

    def config_text(self) -> str:
        base = super().config_text()
        enabled = base.replace('disabled_plugins = ["io.containerd.grpc.v1.cri"]\n', "")
        return enabled + self.cri_section

    def command(self, config: Path) -> list[str]:
        return ["nsenter", f"--net={self.netns}", *super().command(config)]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class CriRig:
    """A CRI-enabled private containerd in its own netns, with images and our shim installed.

    With `guest_image` (a kata_shim.image build), the `kata` handler's default
    config ($KATA_CONF_FILE in containerd's environment) selects the QEMU
    hypervisor with that kernel and initramfs; without it that file does not
    exist and the `kata` handler fails with the shim's "config not found" error.
    `static_sandbox_resource_mgmt` sets that `[runtime]` key in the VM config
    (the pod's resources add to the VM's size, kata_shim.sandbox.sizing).
    Sandbox state lives in /tmp/<marker>: CRI sandbox ids are 64 characters and
    the agent's and QEMU's unix sockets below `<state_dir>/<id>/` must fit in
    108 bytes.
    """

    def __init__(
        self,
        *,
        prefix: str = "cri",
        guest_image: Path | None = None,
        static_sandbox_resource_mgmt: bool = False,
    ) -> None:
        self.marker, self.work, self.local_config = scratch_setup(prefix, "local", None)
        self.state_dir = Path("/tmp") / self.marker
        self.vm_config = self.work / "vm-configuration.toml"
        write_shim_config(self.local_config, state_dir=self.state_dir, extra=POD_CGROUP)
        if guest_image is not None:
            static = "static_sandbox_resource_mgmt = true\n" if static_sandbox_resource_mgmt else ""
            write_vm_config(self.vm_config, self.state_dir, guest_image, extra=POD_CGROUP + static)
        self.netns_name = self.marker
        self.netns = Path("/run/netns") / self.netns_name
        self.cni_conf = self.work / "cni" / "net.d"
        section = cri_config(
            sandbox_image=ociimage.PAUSE.name,
            local_config=self.local_config,
            cni_conf=self.cni_conf,
        )
        env = {"KATA_CONF_FILE": str(self.vm_config)}
        self.containerd = CriContainerd(
            str(self.work / "ctd"), netns=self.netns, cri_section=section, env=env
        )
        install_shim(self.containerd.bin_dir)

    @property
    def cri_address(self) -> str:
        """The CRI gRPC endpoint (containerd's own gRPC socket)."""
        return self.containerd.address

    @property
    def log_root(self) -> Path:
        """A directory for pods' `log_directory` (CRI writes container logs below it)."""
        return self.work / "logs"

    def start(self) -> None:
        """Netns, CNI config, containerd, images. On failure everything is undone."""
        try:
            _ip("netns", "add", self.netns_name)
            _ip("-n", self.netns_name, "link", "set", "lo", "up")
            self.cni_conf.mkdir(parents=True)
            self.log_root.mkdir()
            conflist = cni_conflist(self.marker, self.work / "cni" / "ipam")
            (self.cni_conf / "10-kata-shim.conflist").write_text(json.dumps(conflist, indent=2))
            self.containerd.start()
            self._import_images()
        except BaseException:
            self.close()
            raise

    def _import_images(self) -> None:
        for spec in (ociimage.PAUSE, ociimage.BUSYBOX):
            archive = ociimage.write_image(self.work / f"{spec.name.split('/')[-1]}.tar", spec)
            self.containerd.ctr("images", "import", str(archive), namespace=K8S_NAMESPACE)
        with CriClient(self.cri_address) as client:  # CRI learns of imports asynchronously
            for spec in (ociimage.PAUSE, ociimage.BUSYBOX):
                deadline = time.monotonic() + 30
                while not client.image_status(spec.name).id:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"CRI does not list the imported image {spec.name}")
                    time.sleep(0.1)

    def in_netns(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command in the rig's network namespace (e.g. a client reaching a pod IP)."""
        cmd = ["nsenter", f"--net={self.netns}", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def stream_connect(self, host: str, port: int) -> socket.socket:
        """A TCP connection made in the rig's netns (for criexec.open_stream's `connect`)."""
        return run_in_netns(self.netns, lambda: socket.create_connection((host, port), timeout=30))

    def leftovers(self) -> list[tuple[int, str]]:
        """Live processes (shims, runc, QEMU, ...) whose argv carries our marker."""
        return [(p, a) for p, a in processes_matching(self.marker) if p != self.containerd.pid]

    def mounts(self) -> list[str]:
        """Mount points below the scratch and state dirs (pod netns files, shm, rootfs)."""
        found = mounts.mount_points_under(self.work) + mounts.mount_points_under(self.state_dir)
        return [str(p) for p in found]

    def pod_netns_files(self) -> list[str]:
        """The pod network namespaces CRI holds (netns_mounts_under_state_dir)."""
        netns_dir = self.containerd.work / "state" / "io.containerd.grpc.v1.cri" / "netns"
        return sorted(str(p) for p in netns_dir.iterdir()) if netns_dir.is_dir() else []

    def __enter__(self) -> CriRig:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remove_pods(self) -> None:
        if self.containerd.pid is None:
            return
        with CriClient(self.cri_address, timeout=30) as client:
            for pod in client.list_pods():
                with contextlib.suppress(Exception):
                    client.stop_pod(pod.id)
                with contextlib.suppress(Exception):
                    client.remove_pod(pod.id)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._remove_pods()
        self.containerd.stop()
        for pid, _ in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for scratch in (self.state_dir, self.work):
            mounts.unmount_all_under(scratch)
        if self.netns.exists():
            subprocess.run(["ip", "netns", "delete", self.netns_name], capture_output=True)
        for entry in _cni_cache_entries(self.marker):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


def _cni_cache_entries(network: str) -> Iterator[Path]:
    """libcni's cached results for our network (`<network>-<container id>-<ifname>`)."""
    if CNI_CACHE.is_dir():
        yield from CNI_CACHE.glob(f"{network}-*")
