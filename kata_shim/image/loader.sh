#!/bin/busybox sh
# kata-shim guest loader: /init of the small initramfs that boots the shared
# read-only root image (kata_shim.image.rootfs). Loads the modules listed in
# /modules.order (virtio transports, virtio_blk, virtio_pmem, erofs, overlay),
# mounts the image read-only (/dev/vda, or /dev/pmem0 with DAX), puts a small
# tmpfs overlay on top of it for what must be writable, and hands over to the
# image's /init (init.sh) as PID 1.
fail() {
  echo "kata-shim loader: $*"
  /bin/busybox poweroff -f
}
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
while read -r module; do
  /bin/busybox insmod "/lib/modules/$module" || echo "kata-shim loader: insmod $module failed"
done < /modules.order
ROOT=/dev/vda MOUNT=ro  # kata_shim.root=pmem: the image on virtio-pmem, mapped with DAX
case " $(/bin/busybox cat /proc/cmdline) " in
  *" kata_shim.root=pmem "*) ROOT=/dev/pmem0 MOUNT=ro,dax=always ;;
esac
tries=0
while [ ! -b "$ROOT" ] && [ "$tries" -lt 200 ]; do  # pmem namespaces probe asynchronously
  /bin/busybox usleep 20000
  tries=$((tries + 1))
done
/bin/busybox mount -t erofs -o "$MOUNT" "$ROOT" /lower || fail "cannot mount the root image $ROOT"
/bin/busybox mount -t tmpfs -o mode=0755,size=25% tmpfs /upper || fail "cannot mount tmpfs"
/bin/busybox mkdir -p /upper/data /upper/work
/bin/busybox mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work \
  overlay /newroot || fail "cannot mount the overlay root"
/bin/busybox umount /dev
/bin/busybox umount /proc
exec /bin/busybox switch_root /newroot /init
