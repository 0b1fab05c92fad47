"""The libvirt backend: a transient libvirt domain per sandbox (libvirt-python).

Importing this package registers the `libvirt` backend.
"""

from kata_shim.sandbox.libvirt.backend import LibvirtSandbox

__all__ = ["LibvirtSandbox"]
