#!/bin/busybox sh
# kata-shim guest /init (PID 1 in the initramfs built by kata_shim.image, or in
# the root image after the loader's switch_root: image/loader.sh).
# Mounts the kernel filesystems and cgroup v1 hierarchies, loads the modules
# listed in /modules.order, then, from the kernel command line:
#   kata_shim.share=<tag>         mount that share at SHARED (container rootfs), over
#   kata_shim.share_fs=virtiofs    9p, or virtio-fs with this (shared_fs = "virtio-fs")
#   kata_shim.agent=<listen spec>  run the guest agent on that channel
#   kata_shim.debug_console=1      a shell on the virtio-serial port console.0
#                                  (kata_shim.debugconsole.guest; `kata-shim exec`)
#   kata_shim.run=<self-test>      run one built-in self-test and print
#                                  "KATA_SHIM_RESULT rc=<code> <output>"
#                                  (`bounds`: guest uptimes around Python and
#                                  agent-import runs, for bench/vm_bounds.py)
# and powers the VM off when the agent (or the self-test) ends.
/bin/busybox mount -t proc proc /proc
INIT_UPTIME=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
case " $(cat /proc/cmdline) " in  # boot benchmark: /init reached, nothing else
  *" kata_shim.run=marker "*) echo "KATA_SHIM_RESULT rc=0 init-reached"; /bin/busybox poweroff -f ;;
esac
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /sys/fs/cgroup
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
while read -r module; do  # (booted from the root image: the loader loaded some already)
  grep -q "^$(echo "${module%.ko}" | tr - _) " /proc/modules && continue
  insmod "/lib/modules/$module" || echo "kata-shim init: insmod $module failed"
done < /modules.order
mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup
for controllers in cpu,cpuacct memory pids blkio freezer devices cpuset; do
  mkdir -p "/sys/fs/cgroup/$controllers"
  mount -t cgroup -o "$controllers" cgroup "/sys/fs/cgroup/$controllers" 2>/dev/null \
    || rmdir "/sys/fs/cgroup/$controllers"
done
export PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/root
export PYTHONHOME=/usr PYTHONPATH=/opt/kata-shim/lib PYTHONDONTWRITEBYTECODE=1

RUN=""
AGENT=""
SHARE=""
SHARE_FS=9p
CONSOLE=""
SHARED=/run/kata-containers/shared/containers
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    kata_shim.run=*) RUN="${arg#*=}" ;;
    kata_shim.agent=*) AGENT="${arg#*=}" ;;
    kata_shim.share=*) SHARE="${arg#*=}" ;;
    kata_shim.share_fs=*) SHARE_FS="${arg#*=}" ;;
    kata_shim.debug_console=*) CONSOLE="${arg#*=}" ;;
  esac
done

if [ -n "$SHARE" ]; then
  mkdir -p "$SHARED"
  if [ "$SHARE_FS" = virtiofs ]; then
    mount -t virtiofs "$SHARE" "$SHARED" || echo "kata-shim init: cannot mount virtiofs $SHARE"
  else
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none "$SHARE" "$SHARED" \
      || echo "kata-shim init: cannot mount 9p share $SHARE"
  fi
fi

if [ "$CONSOLE" = 1 ]; then
  python3 -m kata_shim.debugconsole.guest console.0 &
fi

case "$RUN" in
  "") ;;
  bounds)  # twice each: cold (from the root device), then from the guest page cache
    up() { cut -d' ' -f1 /proc/uptime; }
    a=$(up); python3 -c pass; b=$(up); python3 -c pass; c=$(up)
    python3 -c 'import kata_shim.guest.main'; d=$(up)
    python3 -c 'import kata_shim.guest.main'; e=$(up)
    top=$(python3 -X importtime -c 'import kata_shim.guest.main' 2>&1 \
      | sort -t'|' -k2 -n | tail -8 | tr -s ' ' | tr '\n' ';')
    mem=$(dmesg | grep -o 'Memory: .*' | head -1)
    echo "KATA_SHIM_RESULT rc=0 t $INIT_UPTIME $a $b $c $d $e top $top mem $mem" ;;
  selftest-vsock)
    python3 -m kata_shim.native.selftest "${RUN#selftest-}" > /tmp/selftest.out 2>&1
    echo "KATA_SHIM_RESULT rc=$? $(tr '\n' ' ' < /tmp/selftest.out)" ;;
  *) echo "KATA_SHIM_RESULT rc=127 unknown self-test $RUN" ;;
esac

if [ -n "$AGENT" ]; then
  python3 -m kata_shim.guest.main --listen "$AGENT"
  echo "kata-shim init: agent exited with status $?"
fi
poweroff -f
