#!/bin/bash
# Runs `seam-bench fast-path` inside a QEMU guest whose kernel has nftables flowtables, for
# machines whose own kernel has none (CONFIG_NF_FLOW_TABLE unset, as on the project's 6.18
# machines: the kernel answers ENOENT to a flowtable). Issue 14, point 2; see docs/design.md,
# "A fast path for established flows".
#
# The guest is Debian's kernel as scripts/setup.sh unpacks it (/var/lib/seam-test/kernel, or
# SEAM_VM_KERNEL_ROOT), booted with a busybox initramfs that mounts this machine's / read-only
# over virtio-9p and runs the given seam-bench from it (so nft, ip, iperf3 and conntrack are this
# machine's). QEMU runs in software emulation (TCG) unless KVM works: the figures are ratios
# inside one guest, not throughput of this machine.
#
#   sudo scripts/bench-fast-path-guest.sh target/debug/seam-bench --seconds 3 --rounds 5
set -euo pipefail

bench=$(realpath "${1:?usage: $0 SEAM_BENCH [fast-path options]}")
shift
kroot=${SEAM_VM_KERNEL_ROOT:-/var/lib/seam-test/kernel}
kernel=$(ls "$kroot"/boot/vmlinuz-* | sort | tail -1)
version=${kernel##*/vmlinuz-}
modules=$kroot/lib/modules/$version
[ -d "$modules/kernel/net/netfilter" ] || { echo "no modules for $version under $kroot" >&2; exit 2; }
ls "$modules"/kernel/net/netfilter/nf_flow_table_inet.ko* >/dev/null 2>&1 ||
  { echo "kernel $version has no flowtable module" >&2; exit 2; }

work=$(mktemp -d /tmp/seam-fastpath-guest.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A module tree of symlinks with its own modules.dep, so that the guest's modprobe (busybox) and
# the kernel's module requests find every module; the unpacked kernel is left as it is.
mkdir -p "$work/kmod/lib/modules/$version"
cp -rs "$modules/kernel" "$work/kmod/lib/modules/$version/kernel"
cp "$modules"/modules.order "$modules"/modules.builtin "$work/kmod/lib/modules/$version/"
busybox depmod -b "$work/kmod" "$version"

r=$work/initrd
mkdir -p "$r"/{bin,sbin,dev,proc,sys,newroot,mods,hostkmod,lib/modules/"$version"}
mkdir -p "$r$kroot"
cp "$(command -v busybox)" "$r/bin/"
for a in sh mount insmod chroot mkdir cat poweroff; do ln -s busybox "$r/bin/$a"; done
ln -s ../bin/busybox "$r/sbin/modprobe"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci fs/netfs/netfs fs/fscache/fscache \
  net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p; do
  [ -e "$modules/kernel/$m.ko" ] || continue
  cp "$modules/kernel/$m.ko" "$r/mods/"
  echo "${m##*/}" >>"$r/mods/order"
done
cat >"$r/init" <<EOF
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in \$(cat /mods/order); do insmod /mods/\$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /newroot || poweroff -f
N=/newroot
mount --bind \$N$work/kmod/lib/modules/$version /lib/modules/$version
mount --bind \$N$kroot $kroot
echo /sbin/modprobe > /proc/sys/kernel/modprobe
for m in nfnetlink nf_tables nf_conntrack nft_ct nf_flow_table_inet nft_flow_offload veth bridge \
  br_netfilter nf_conntrack_netlink; do /sbin/modprobe \$m; done
mount -t proc proc \$N/proc; mount -t sysfs sys \$N/sys; mount -t devtmpfs dev \$N/dev
mount -t tmpfs tmp \$N/run; mount -t tmpfs tmp \$N/tmp; mount -t tmpfs tmp \$N/var/tmp
mkdir -p \$N/run/netns
echo "guest kernel \$(cat /proc/sys/kernel/osrelease)"
chroot \$N $bench fast-path $*
echo "guest: seam-bench exited \$?"
poweroff -f
EOF
chmod +x "$r/init"
(cd "$r" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz")

accel=tcg,thread=multi
timeout "${SEAM_GUEST_TIMEOUT:-2400}" qemu-system-x86_64 -accel "$accel" -smp 2 -m 2048 \
  -nographic -no-reboot -kernel "$kernel" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" \
  -fsdev local,id=hr,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hr,mount_tag=hostroot |
  grep --line-buffered -v -E '^\s*$|SeaBIOS|iPXE|Press Ctrl|Booting from'
