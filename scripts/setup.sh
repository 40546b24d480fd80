#!/usr/bin/env bash
# Installs what Seam needs on a fresh Debian machine (as root) and builds the workspace.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  iproute2 nftables iputils-ping netcat-openbsd iperf3
  containernetworking-plugins containerd runc busybox-static iptables
  protobuf-compiler libprotobuf-dev etcd-server etcd-client
  qemu-system-x86 faketime
  chromium curl openssl
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The QEMU guest test boots a distribution kernel. A machine (or container) without one in /boot
# gets Debian's current one unpacked under /var/lib/seam-test/kernel — not installed: no boot
# loader or initramfs hooks run. scripts/test.sh points SEAM_VM_KERNEL at it.
if ! ls /boot/vmlinuz-* >/dev/null 2>&1 && ! ls /var/lib/seam-test/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
  echo "== unpacking a Debian kernel for the QEMU guest test"
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q "$kpkg")
  mkdir -p /var/lib/seam-test/kernel
  dpkg-deb -x "$tmp"/*.deb /var/lib/seam-test/kernel
  rm -rf "$tmp"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs); the pinned toolchain is in rust-toolchain.toml" >&2
  exit 1
fi
profile=${SEAM_PROFILE:-release}
echo "== building Seam ($profile)"
if [ "$profile" = release ]; then
  cargo build --locked --release --workspace --bins
else
  cargo build --locked --workspace --bins
fi
