"""The QEMU backend: one QEMU process per sandbox, controlled over QMP.

Importing this package registers the `qemu` backend.
"""

from kata_shim.sandbox.qemu.backend import QemuSandbox

__all__ = ["QemuSandbox"]
