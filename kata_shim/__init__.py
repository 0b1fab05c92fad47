"""kata-shim: a containerd shim v2 runtime for VM-isolated containers.

Public surface: the version string. Everything else lives in sub-packages
(`ttrpc`, `proto`, `native`, `io`, ...) and is imported from there.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
