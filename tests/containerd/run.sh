#!/usr/bin/env bash
# End-to-end: containerd 1.6 + runc set up containers through seam-cni.
#
#   1. `seam lab up` a 2-node lab (controller + one seamd per node, in namespaces <lab>-n1/-n2).
#   2. One containerd per node, started with `nsenter --net=/run/netns/<lab>-nX` (network
#      namespace only: it shares the root mount namespace, so the netns bind mounts and rootfs
#      mounts it makes are visible to seamd and to the checks below). Private root/state/socket
#      under a temp dir; its CRI plug-in's conf_dir holds a copy of the node's conflist and its
#      bin_dir a symlink to seam-cni. CNI plug-ins therefore run in the node's namespace, as a
#      runtime on that node would, and nothing touches the root network namespace.
#   3. busybox + pause images built from busybox-static (mkimage.py) and imported.
#   4. n1: `ctr run --rm --cni` (attached, in the background) of a busybox that sleeps. ctr has
#      no flag for its CNI dirs (it reads /etc/cni/net.d and /opt/cni/bin), so each ctr that does
#      CNI runs in a private mount namespace where read-only overlays add cni/net.d and
#      cni/bin to /etc and /opt: the host's /etc and /opt are never written.
#   5. n2 (CRI_NODE): seam-e2e-cri (a CRI v1 client) runs a pod sandbox `default/cri-pod` and a
#      sleeping busybox container in it, through containerd's CRI plug-in.
#   6. ping both ways (ctr task exec / CRI ExecSync), across nodes.
#   7. Orderly teardown (CRI StopPodSandbox/RemovePodSandbox, ctr task kill → ctr's CNI DEL),
#      then checks: the controller has no endpoints left, containerd and its shims are gone, no
#      mounts under the temp dir, `seam lab down` leaves no lab namespaces, and the root
#      namespace's links, routes and nftables ruleset are unchanged.
#
# The EXIT trap removes everything this script made, also on failure.
#
# needs (root): containerd runc busybox-static containernetworking-plugins (loopback) iproute2 util-linux python3, and the Seam
# binaries: built here with cargo unless SEAM_E2E_NO_BUILD=1 (SEAM_BIN_DIR overrides where).
# env: SEAM_E2E_LAB (lab name, default ctrde2e), CRI_NODE (n2; n1 puts both on one node),
#      SEAM_E2E_KEEP_LOGS=1 (copy logs to /tmp/seam-ctrd-logs.<pid> before clean-up),
#      SEAM_E2E_CNI_VERSION (cniVersion of the conflist given to containerd, default 1.0.0).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LAB=${SEAM_E2E_LAB:-ctrde2e}
CRI_NODE=${CRI_NODE:-n2}
CTR_NODE=n1
CNI_VERSION=${SEAM_E2E_CNI_VERSION:-1.0.0}
BIN=${SEAM_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
BUSYBOX_IMG=localhost/busybox:seam-e2e
PAUSE_IMG=localhost/pause:seam-e2e
CTR_ID=seam-e2e-ctr
POD_NAME=cri-pod
POD_NS=default

say() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root"
for t in containerd ctr runc nsenter unshare ip nft python3 /bin/busybox /usr/lib/cni/loopback; do
  command -v "$t" >/dev/null || fail "$t not found (apt-get install containerd runc busybox-static containernetworking-plugins iproute2 nftables util-linux python3)"
done
case "$CRI_NODE" in n1 | n2) ;; *) fail "CRI_NODE must be n1 or n2" ;; esac

if [ "${SEAM_E2E_NO_BUILD:-0}" != 1 ]; then
  say "build"
  (cd "$ROOT" && cargo build --release -q -p seamd -p seam-controller -p seam-cni -p seam -p seam-e2e-cri)
fi
for b in seam seamd seam-controller seam-cni seam-e2e-cri; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b missing (cargo build --release -p $b)"
done
SEAM="$BIN/seam"
CRI="$BIN/seam-e2e-cri"

W=$(mktemp -d /tmp/seam-ctrd.XXXXXX)
LAB_UP=0
CTR_RUN_PID=""
declare -A CPID=()   # node -> containerd pid
# Host paths containerd, ctr and libcni create outside the private root/state:
# /run/containerd/s (shim sockets, fixed in 1.6), /var/lib/cni (libcni result cache), and the
# cgroup v1 parents `default` (ctr) and `k8s.io` (CRI). Remove the ones that did not exist before.
NEWPATHS=()
for d in /run/containerd /var/lib/cni; do
  [ -e "$d" ] || NEWPATHS+=("$d")
done
for c in /sys/fs/cgroup/*/; do
  for sub in default k8s.io; do [ -e "$c$sub" ] || NEWPATHS+=("$c$sub"); done
done

root_ns_snapshot() {
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "--"
  ip route show table all | sort
  echo "--"
  nft list ruleset 2>/dev/null | sha256sum
}
root_ns_snapshot > "$W/rootns.before"

sock() { echo "$W/$1/state/containerd.sock"; }
netns_of() { echo "/run/netns/$LAB-$1"; }
cri() { "$CRI" --socket "$(sock "$CRI_NODE")" "$@"; }

# ctr with CNI: in node $1's network namespace and a private mount namespace where read-only
# overlays add $W/$1/ctr-etc (cni/net.d/…) to /etc and $W/$1/ctr-opt (cni/bin/seam-cni) to /opt.
ctr_cni() {
  local node=$1; shift
  nsenter --net="$(netns_of "$node")" unshare --mount --propagation private -- \
    sh -c 'mount -t overlay seam-e2e-etc -o "ro,lowerdir=$1/ctr-etc:/etc" /etc &&
           mount -t overlay seam-e2e-opt -o "ro,lowerdir=$1/ctr-opt:/opt" /opt &&
           shift && exec ctr "$@"' sh "$W/$node" -a "$(sock "$node")" "$@"
}

# SEAM_E2E_KEEP_LOGS=1: copy containerd's, ctr's, the agents' and the controller's logs
keep_logs() {
  [ "${SEAM_E2E_KEEP_LOGS:-0}" = 1 ] || return 0
  local keep=/tmp/seam-ctrd-logs.$$
  mkdir -p "$keep"
  for n in n1 n2; do
    cp "$W/$n/containerd.log" "$keep/containerd-$n.log" 2>/dev/null
    cp "/run/seam-lab/$LAB/$n/seamd.log" "$keep/seamd-$n.log" 2>/dev/null
  done
  cp "$W/ctr-run.log" "/run/seam-lab/$LAB/controller.log" "$keep/" 2>/dev/null
  echo "logs kept in $keep"
  return 0
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    echo "--- failed (exit $rc); logs:" >&2
    for f in "$W"/*/containerd.log "$W/ctr-run.log"; do
      [ -f "$f" ] && { echo "--- $f (last 30 lines)" >&2; tail -30 "$f" >&2; }
    done
    for n in n1 n2; do
      f=/run/seam-lab/$LAB/$n/seamd.log
      [ -f "$f" ] && { echo "--- $f (last 30 lines)" >&2; tail -30 "$f" >&2; }
    done
  fi
  keep_logs
  for node in "${!CPID[@]}"; do
    local s; s=$(sock "$node")
    [ -S "$s" ] || continue
    "$CRI" --socket "$s" clean >/dev/null 2>&1
    for ns in default k8s.io; do
      for t in $(ctr -a "$s" -n $ns tasks ls -q 2>/dev/null); do ctr -a "$s" -n $ns tasks kill -s KILL "$t" 2>/dev/null; done
    done
  done
  if [ -n "$CTR_RUN_PID" ]; then
    # `ctr run --rm` does CNI DEL and deletes the container once its task is gone
    for _ in $(seq 100); do kill -0 "$CTR_RUN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$CTR_RUN_PID" 2>/dev/null && kill -KILL "$CTR_RUN_PID"
  fi
  for node in "${!CPID[@]}"; do
    local s; s=$(sock "$node")
    for ns in default k8s.io; do
      for t in $(ctr -a "$s" -n $ns tasks ls -q 2>/dev/null); do ctr -a "$s" -n $ns tasks delete -f "$t"; done
      for c in $(ctr -a "$s" -n $ns containers ls -q 2>/dev/null); do ctr -a "$s" -n $ns containers delete "$c"; done
    done
    kill -TERM "${CPID[$node]}" 2>/dev/null
  done
  for node in "${!CPID[@]}"; do
    for _ in $(seq 100); do kill -0 "${CPID[$node]}" 2>/dev/null || break; sleep 0.1; done
    kill -0 "${CPID[$node]}" 2>/dev/null && kill -KILL "${CPID[$node]}"
  done
  # shims of ours (their command line names our socket) that outlived their tasks, and runc
  # containers still registered under our runc roots
  for p in $(pgrep -f "containerd-shim.*$W/"); do kill -KILL "$p"; done
  find "$W" -path '*runc*' -name state.json 2>/dev/null | xargs -r -n1 dirname | xargs -r -n1 dirname | sort -u |
    while read -r r; do
      for id in $(runc --root "$r" list -q 2>/dev/null); do runc --root "$r" delete -f "$id"; done
    done
  grep -o " $W/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  if [ "$LAB_UP" = 1 ]; then "$SEAM" lab down --name "$LAB"; fi
  rm -rf "$W"
  for ((i = ${#NEWPATHS[@]} - 1; i >= 0; i--)); do
    local p=${NEWPATHS[$i]}
    case "$p" in
      /sys/fs/cgroup/*) [ -d "$p" ] && rmdir "$p" 2>/dev/null ;;
      *) rm -rf "$p" ;;
    esac
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "lab $LAB (2 nodes)"
"$SEAM" lab up --name "$LAB" --nodes 2 --segment-mode namespace --json > "$W/lab.json" ||
  fail "seam lab up failed (a lab named $LAB left over? seam lab down --name $LAB)"
LAB_UP=1

say "images"
"$HERE/mkimage.py" "$W/busybox.tar" "$BUSYBOX_IMG" > /dev/null
"$HERE/mkimage.py" "$W/pause.tar" "$PAUSE_IMG" --pause > /dev/null

for node in n1 n2; do
  d="$W/$node"
  mkdir -p "$d/cni/net.d" "$d/cni/bin" "$d/ctr-etc/cni/net.d" "$d/ctr-opt/cni/bin" "$d/pod-logs"
  # the node's conflist, at cniVersion $CNI_VERSION (the lab writes 1.1.0, which containerd
  # 1.6's libcni does not know: it speaks up to 1.0.0)
  python3 - "$W/lab.json" "$node" "$d/cni/net.d/10-seam.conflist" "$CNI_VERSION" <<'EOF'
import json, sys
lab = json.load(open(sys.argv[1]))
node = next(n for n in lab["nodes"] if n["name"] == sys.argv[2])
conf = json.load(open(node["cniConfig"]))
conf["cniVersion"] = sys.argv[4]
json.dump(conf, open(sys.argv[3], "w"), indent=2)
EOF
  cp "$d/cni/net.d/10-seam.conflist" "$d/ctr-etc/cni/net.d/"
  ln -s "$BIN/seam-cni" "$d/cni/bin/seam-cni"
  # the CRI plug-in brings up the sandbox's lo with the reference `loopback` plug-in
  ln -s /usr/lib/cni/loopback "$d/cni/bin/loopback"
  ln -s "$BIN/seam-cni" "$d/ctr-opt/cni/bin/seam-cni"
  cat > "$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"

[grpc]
  address = "$d/state/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMG"
    # root here may lack CAP_SYS_RESOURCE: runc could not set the sandbox's oom_score_adj
    restrict_oom_score_adj = true
    # sandbox netns bind mounts under our state dir, not /run/netns
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "$d/state/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$d/cni/bin"
      conf_dir = "$d/cni/net.d"
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = "$d/root/opt"
EOF
  say "containerd in $LAB-$node"
  nsenter --net="$(netns_of "$node")" containerd --config "$d/config.toml" > "$d/containerd.log" 2>&1 &
  CPID[$node]=$!
done
for node in n1 n2; do
  for _ in $(seq 150); do [ -S "$(sock "$node")" ] && break; sleep 0.1; done
  [ -S "$(sock "$node")" ] || fail "containerd in $node did not start (see $W/$node/containerd.log)"
  s=$(sock "$node")
  ctr -a "$s" -n default image import "$W/busybox.tar" > /dev/null
  ctr -a "$s" -n k8s.io image import "$W/busybox.tar" > /dev/null
  ctr -a "$s" -n k8s.io image import "$W/pause.tar" > /dev/null
done
echo "containerd $(ctr -a "$(sock n1)" version | awk '/Server/{f=1} f&&/Version/{print $2; exit}'), CRI: $(cri version)"

say "ctr run --cni on $CTR_NODE"
ctr_cni "$CTR_NODE" run --rm --cni --fifo-dir "$W/fifo" --runc-root "$W/$CTR_NODE/state/runc-ctr" \
  "$BUSYBOX_IMG" "$CTR_ID" /bin/sleep 3600 < /dev/null > "$W/ctr-run.log" 2>&1 &
CTR_RUN_PID=$!
CTR_IP=""
for _ in $(seq 100); do
  kill -0 "$CTR_RUN_PID" 2>/dev/null || { cat "$W/ctr-run.log" >&2; fail "ctr run --cni exited"; }
  CTR_IP=$(ctr -a "$(sock "$CTR_NODE")" task exec --exec-id ip-$RANDOM "$CTR_ID" \
    ip -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | cut -d/ -f1) || true
  [ -n "$CTR_IP" ] && break
  sleep 0.1
done
[ -n "$CTR_IP" ] || fail "ctr container has no IPv4 address on eth0"
echo "ctr container $CTR_ID: eth0 $CTR_IP"

say "CRI pod sandbox on $CRI_NODE"
POD_OUT=$(cri pod-up --name "$POD_NAME" --namespace "$POD_NS" --uid 6f1c2e7a-0000-4000-8000-5ea3e2e0c0d1 \
  --image "$BUSYBOX_IMG" --log-dir "$W/$CRI_NODE/pod-logs")
eval "$POD_OUT"
echo "pod $POD_NS/$POD_NAME: sandbox ${POD_ID:0:12} ip $POD_IP, container ${CONTAINER_ID:0:12}"
POD_ETH0=$(cri exec --container "$CONTAINER_ID" -- ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
[ "$POD_ETH0" = "$POD_IP" ] || fail "pod eth0 has $POD_ETH0, PodSandboxStatus says $POD_IP"

say "seam endpoints"
"$SEAM" get endpoints -o json --lab "$LAB" > "$W/endpoints.json"
python3 - "$W/endpoints.json" "$CTR_IP" "$POD_IP" <<'EOF'
import json, sys
eps = json.load(open(sys.argv[1]))
print(json.dumps(eps)[:2000])
text = json.dumps(eps)
for ip in sys.argv[2:]:
    assert ip in text, f"no endpoint with {ip}"
EOF

say "ping: ctr container ($CTR_NODE) -> CRI pod ($CRI_NODE)"
ctr -a "$(sock "$CTR_NODE")" task exec --exec-id ping-$RANDOM "$CTR_ID" ping -c 3 -W 2 "$POD_IP"
say "ping: CRI pod ($CRI_NODE) -> ctr container ($CTR_NODE)"
cri exec --container "$CONTAINER_ID" -- ping -c 3 -W 2 "$CTR_IP"

say "teardown"
cri pod-down --pod "$POD_ID"
ctr -a "$(sock "$CTR_NODE")" task kill -s KILL "$CTR_ID"
for _ in $(seq 100); do kill -0 "$CTR_RUN_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$CTR_RUN_PID" 2>/dev/null && fail "ctr run did not finish after its task was killed"
wait "$CTR_RUN_PID" || true   # exit status of the killed task
CTR_RUN_PID=""
[ -z "$(ctr -a "$(sock "$CTR_NODE")" containers ls -q)" ] || fail "ctr run --rm left its container"

say "checks"
left=$("$SEAM" get endpoints -o json --lab "$LAB")
python3 -c 'import json,sys; e=json.loads(sys.argv[1]); assert e == [], f"endpoints left: {e}"' "$left" ||
  fail "controller still has endpoints: $left"
echo "controller endpoints after CNI DEL: $left"
for node in n1 n2; do
  kill -TERM "${CPID[$node]}"
done
for node in n1 n2; do
  for _ in $(seq 100); do kill -0 "${CPID[$node]}" 2>/dev/null || break; sleep 0.1; done
  kill -0 "${CPID[$node]}" 2>/dev/null && fail "containerd in $node did not stop"
  unset "CPID[$node]"
done
if pgrep -af "containerd.*$W/"; then fail "containerd/shim processes left (above)"; fi
if grep " $W/" /proc/mounts; then fail "mounts left under $W (above)"; fi
echo "no containerd/shim processes, no mounts under $W"
keep_logs
"$SEAM" lab down --name "$LAB"
LAB_UP=0
if ip netns list | grep -E "^$LAB-"; then fail "lab namespaces left (above)"; fi
echo "no lab namespaces"
root_ns_snapshot > "$W/rootns.after"
diff "$W/rootns.before" "$W/rootns.after" || fail "root namespace links/routes/nftables changed (diff above)"
echo "root namespace links, routes and nftables unchanged"
say "PASS"
