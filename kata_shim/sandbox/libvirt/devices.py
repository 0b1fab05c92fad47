"""Domain XML fragments for issue 17's devices under libvirt (as sandbox/qemu/devices.py).

* `tcg_features`: `<tcg><tb-cache>` — the TCG translation cache size (libvirt
  >= 8.0); nothing for KVM domains.
* `balloon`: `<memballoon model='virtio' freePageReporting='on'>`, or none.
* `root_disk`: the shared read-only root image as a virtio disk: `<readonly/>`,
  `cache='none'` (O_DIRECT: no second copy in the host page cache).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

__all__ = ["balloon", "root_disk", "tcg_features"]


def tcg_features(domain_type: str, tb_size_mb: int) -> str:
    if domain_type != "qemu" or tb_size_mb <= 0:
        return ""
    return f"    <tcg>\n      <tb-cache unit='MiB'>{tb_size_mb}</tb-cache>\n    </tcg>\n"


def balloon(free_page_reporting: bool) -> str:
    if not free_page_reporting:
        return "    <memballoon model='none'/>\n"
    return "    <memballoon model='virtio' freePageReporting='on'/>\n"


def root_disk(image: str) -> str:
    if not image:
        return ""
    return (
        "    <disk type='file' device='disk'>\n"
        "      <driver name='qemu' type='raw' cache='none' io='threads'/>\n"
        f"      <source file={quoteattr(image)}/>\n"
        "      <target dev='vda' bus='virtio'/>\n"
        "      <readonly/>\n"
        "    </disk>\n"
    )
