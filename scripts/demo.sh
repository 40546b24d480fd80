#!/usr/bin/env bash
# The lab demo on the embedded store: 2 nodes, 2 namespaces x 2 pods, a measured connectivity
# matrix. Run as root on Debian. Pass --keep to leave the lab up.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec ./target/release/seam lab demo "$@"
