#!/usr/bin/env bash
# All of Seam's checks, as CI runs them (as root on Debian):
#   formatting, clippy, tier-1 tests (no root), then the privileged tests (network namespaces,
#   the lab, real seam-cni/seamd binaries) with -- --ignored.
set -euo pipefail
# Incremental caches double the size of the target tree and a clean CI clone gains nothing from them.
export CARGO_INCREMENTAL=0
cd "$(dirname "$0")/.."
SEAM_PROFILE=debug ./scripts/setup.sh
# Where cargo puts the binaries (CARGO_TARGET_DIR is honoured if set).
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

on_failure() {
  echo "== FAILED: state left behind, for diagnosis"
  ip netns list || true
  for log in /run/seam-lab/*/controller.log /run/seam-lab/*/*/seamd.log; do
    [ -f "$log" ] && { echo "--- $log"; tail -n 40 "$log"; }
  done
  for lab in /run/seam-lab/*/; do
    [ -d "$lab" ] && "$target_dir/debug/seam" lab down --name "$(basename "$lab")" || true
  done
}
trap on_failure ERR

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets --all-features -- -D warnings
echo "== tier 1: unit, property and in-process tests"
cargo test --locked --workspace
echo "== tier 2/3: privileged tests (network namespaces, lab, real binaries)"
[ "$(id -u)" -eq 0 ] || { echo "the privileged tests need root" >&2; exit 1; }
# The privileged tests drive the debug binaries setup.sh just built.
export SEAM_BIN_DIR="$target_dir/debug" SEAM_E2E_NO_BUILD=1
if ! ls /boot/vmlinuz-* >/dev/null 2>&1 && [ -z "${SEAM_VM_KERNEL:-}" ]; then
  SEAM_VM_KERNEL=$(ls /var/lib/seam-test/kernel/boot/vmlinuz-* | tail -n 1)
  export SEAM_VM_KERNEL
fi
cargo test --locked --workspace -- --ignored --test-threads=1
echo "== all tests passed"
