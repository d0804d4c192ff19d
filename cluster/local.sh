#!/usr/bin/env bash
# A real two-node Ray cluster on one machine, for tests and demos.
#
#   eval "$(cluster/local.sh up)"       # start head + worker; exports what a client needs
#   cluster/local.sh status              # which of its processes live, and Ray's view of the nodes
#   cluster/local.sh kill-worker         # SIGKILL the worker node (a lost machine), head untouched
#   cluster/local.sh kill-head           # SIGKILL the head node (GCS, dashboard, job drivers)
#   eval "$(cluster/local.sh restart-head)"    # the head back (and the worker, which cannot
#                                        # rejoin a new GCS by itself); exports again: new node ids
#   eval "$(cluster/local.sh restart-worker)"  # the worker back (after kill-worker)
#   cluster/local.sh down                # stop everything it started, a half-dead cluster too
#
# Each node is started in its own session (setsid), so every process Ray spawns for it (GCS,
# raylet, dashboard, agents, workers) carries that session id (job drivers get a session of their
# own from Ray's job supervisor and end with their node's processes); `down` signals those
# sessions, plus strays: processes whose command line names the state folder (a node's
# log_monitor outlives a raylet whose GCS died). Nothing else. Never `ray stop`: it kills every
# Ray process on the host. After a head loss, a sweep job died with it: submit
# `zeroflow resume NAME --storage ...` as a job once `restart-head` is through.
#
# Token authentication is on, the same way on every process: RAY_AUTH_MODE=token and
# RAY_AUTH_TOKEN_PATH naming a token file in the state folder (mode 600). Clients export both.
# The token does NOT guard the Prometheus /metrics endpoints (the agents', the dashboard's, the
# autoscaler monitor's): whoever reaches them reads them.
#
# Where it listens. Ray derives every bind address from the node IP: when it is exactly
# 127.0.0.1, every listener of both nodes (GCS, raylets, worker processes, agents, client
# server, metrics) is on 127.0.0.1; with any other IP the gRPC servers and metrics listen on all
# interfaces. But `ray start` rewrites a loopback --node-ip-address or --address to the host's
# outward IP (ray/_private/services.py, resolve_ip_for_localhost). So for ZEROFLOW_NODE_IP=
# 127.0.0.1 (the default) the head runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which turns the
# rewrite off (its processes, job drivers included, inherit it), and the worker, which cannot
# take that variable (`ray start --address` then refuses to run), gets no --node-ip-address and
# --address LOCALHOST:<port>: a name Ray does not rewrite, resolving to 127.0.0.1, from which it
# derives node IP 127.0.0.1. Clients get RAY_ADDRESS=LOCALHOST:<port> for the same reason.
# With any other ZEROFLOW_NODE_IP both nodes use it, and these listen on ALL interfaces: firewall
# them: the GCS port (ZEROFLOW_RAY_PORT), each raylet's node-manager and object-manager ports
# (random), every port of the two worker-port ranges (workers, trials, job drivers), each
# agent's gRPC and metrics ports (random), and the dashboard's and autoscaler's metrics ports
# (ZEROFLOW_DASHBOARD_METRIC_PORT, ZEROFLOW_AUTOSCALER_METRIC_PORT). The jobs API, each agent's
# HTTP port, the runtime-env agents and the Ray client server bind the node IP itself.
#
# Settings (environment):
#   ZEROFLOW_CLUSTER_DIR      state folder: pids, tokens, node temp dirs (/tmp/zeroflow-cluster)
#   ZEROFLOW_NODE_IP          address both nodes advertise (127.0.0.1: and bind; see above)
#   ZEROFLOW_RAY_PORT         GCS port (6390)          ZEROFLOW_DASHBOARD_PORT  jobs API (8266)
#   ZEROFLOW_CLIENT_PORT      Ray client port (10001)
#   ZEROFLOW_HEAD_CPUS        CPUs of each node (1)    ZEROFLOW_WORKER_CPUS     (1)
#   ZEROFLOW_OBJECT_STORE_MB  object store per node (256)
#   ZEROFLOW_HEAD_PORTS / ZEROFLOW_WORKER_PORTS  worker-process port ranges (20000-20999,
#                             21000-21999), disjoint so the two raylets never race for a port
#   ZEROFLOW_DASHBOARD_METRIC_PORT / ZEROFLOW_AUTOSCALER_METRIC_PORT  the head's two metrics
#                             ports (44227, 44217: Ray's defaults, one pair per host)
# The nodes carry the custom resources {zeroflow_head: 1} and {zeroflow_worker: 1}.
set -euo pipefail

DIR=${ZEROFLOW_CLUSTER_DIR:-/tmp/zeroflow-cluster}
IP=${ZEROFLOW_NODE_IP:-127.0.0.1}
GCS_PORT=${ZEROFLOW_RAY_PORT:-6390}
DASH_PORT=${ZEROFLOW_DASHBOARD_PORT:-8266}
CLIENT_PORT=${ZEROFLOW_CLIENT_PORT:-10001}
HEAD_CPUS=${ZEROFLOW_HEAD_CPUS:-1}
WORKER_CPUS=${ZEROFLOW_WORKER_CPUS:-1}
STORE_BYTES=$(( ${ZEROFLOW_OBJECT_STORE_MB:-256} * 1024 * 1024 ))
HEAD_PORTS=${ZEROFLOW_HEAD_PORTS:-20000-20999}
WORKER_PORTS=${ZEROFLOW_WORKER_PORTS:-21000-21999}
DASH_METRIC_PORT=${ZEROFLOW_DASHBOARD_METRIC_PORT:-44227}
AUTOSCALER_METRIC_PORT=${ZEROFLOW_AUTOSCALER_METRIC_PORT:-44217}
RAY=${ZEROFLOW_RAY_BIN:-$(command -v ray || true)}
PYTHON=${ZEROFLOW_PYTHON:-$(dirname "${RAY:-/usr/bin/ray}")/python}
[[ -x $PYTHON ]] || PYTHON=$(command -v python3)

die() { echo "cluster/local.sh: $*" >&2; exit 1; }

auth_env() {
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$DIR/auth_token" RAY_USAGE_STATS_ENABLED=0
}

# Live pids of the session whose id is stored in $DIR/<node>.sid.
session_pids() {
  local sid_file="$DIR/$1.sid"
  [[ -f $sid_file ]] || return 0
  # zombies (state Z) are dead already: an init that never reaps them must not count
  ps -eo pid=,sid=,stat= | awk -v s="$(cat "$sid_file")" '$2 == s && $3 !~ /^Z/ { print $1 }'
}

# Live pids of processes outside the node sessions whose command line names the state folder.
stray_pids() {
  local sids
  sids=$(cat "$DIR"/*.sid 2>/dev/null | tr '\n' ' ')
  # through the environment, so that awk's own command line does not name the folder
  ps -eo pid=,sid=,stat=,args= | ZF_DIR="$DIR/" ZF_SIDS=" $sids" awk '
    $3 !~ /^Z/ && index($0, ENVIRON["ZF_DIR"]) && !index(ENVIRON["ZF_SIDS"], " " $2 " ") { print $1 }'
}

all_pids() { session_pids head; session_pids worker; stray_pids; }

# Whether node $1 (head|worker) runs its raylet: a node without one is dead, whatever is left.
node_alive() {
  local pid
  for pid in $(session_pids "$1"); do
    [[ $(ps -o comm= -p "$pid" 2>/dev/null) == raylet ]] && return 0
  done
  return 1
}

# setsid'd `ray start`, recording the session id (= the pid of setsid's child) first.
start_node() {
  local node=$1; shift
  mkdir -p "$DIR/$node"
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$DIR/$node.sid" "$RAY" start "$@" \
    >"$DIR/$node.log" 2>&1 || { tail -n 20 "$DIR/$node.log" >&2; die "$node failed to start (log: $DIR/$node.log)"; }
}

nodes_json() {
  "$PYTHON" - "$IP" "$DASH_PORT" <<'EOF'
import json, sys
from ray.util.state import list_nodes
nodes = list_nodes(address=f"http://{sys.argv[1]}:{sys.argv[2]}", detail=True)
print(json.dumps([{"id": n.node_id, "state": n.state, "resources": n.resources_total}
                  for n in nodes]))
EOF
}

# The node id carrying custom resource $1 among ALIVE nodes (empty if none).
node_id() {
  nodes_json 2>/dev/null | "$PYTHON" -c '
import json, sys
for n in json.load(sys.stdin):
    if n["state"] == "ALIVE" and sys.argv[1] in n["resources"]:
        print(n["id"])' "$1"
}

loopback() { [[ $IP == 127.0.0.1 ]]; }

# The GCS address as clients and the worker dial it: LOCALHOST, which Ray does not rewrite, for
# a loopback cluster (see the header).
gcs_address() {
  if loopback; then echo "LOCALHOST:$GCS_PORT"; else echo "$IP:$GCS_PORT"; fi
}

start_head() {
  # 0 turns the loopback rewrite off; 1 is Ray's default on Linux
  local cluster=1
  if loopback; then cluster=0; fi
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=$cluster DASHBOARD_METRIC_PORT=$DASH_METRIC_PORT \
    AUTOSCALER_METRIC_PORT=$AUTOSCALER_METRIC_PORT \
    start_node head --head --node-ip-address "$IP" --port "$GCS_PORT" \
    --temp-dir "$DIR/head" --num-cpus "$HEAD_CPUS" --resources '{"zeroflow_head": 1}' \
    --include-dashboard true --dashboard-host "$IP" --dashboard-port "$DASH_PORT" \
    --ray-client-server-port "$CLIENT_PORT" \
    --min-worker-port "${HEAD_PORTS%-*}" --max-worker-port "${HEAD_PORTS#*-}" "${COMMON[@]}"
}

start_worker() {
  local at=(--address "$(gcs_address)")
  if loopback; then
    getent ahostsv4 LOCALHOST | grep -q '^127\.0\.0\.1 ' \
      || die "LOCALHOST does not resolve to 127.0.0.1 (/etc/hosts): the worker dials the head by that name"
  else
    at+=(--node-ip-address "$IP")
  fi
  start_node worker "${at[@]}" --temp-dir "$DIR/worker" \
    --num-cpus "$WORKER_CPUS" --resources '{"zeroflow_worker": 1}' \
    --min-worker-port "${WORKER_PORTS%-*}" --max-worker-port "${WORKER_PORTS#*-}" "${COMMON[@]}"
}

# Wait until both nodes are ALIVE in Ray's view, then print the export lines a client needs.
wait_and_export() {
  local head="" worker="" i
  for i in $(seq 60); do
    head=$(node_id zeroflow_head || true); worker=$(node_id zeroflow_worker || true)
    [[ -n $head && -n $worker ]] && break
    sleep 1
  done
  [[ -n $head && -n $worker ]] || { cmd_down >&2; die "the two nodes did not both come up in 60 s"; }
  echo "export RAY_ADDRESS=$(gcs_address)"
  echo "export RAY_API_SERVER_ADDRESS=http://$IP:$DASH_PORT"
  echo "export RAY_AUTH_MODE=token"
  echo "export RAY_AUTH_TOKEN_PATH=$DIR/auth_token"
  echo "export ZEROFLOW_HEAD_NODE_ID=$head"
  echo "export ZEROFLOW_WORKER_NODE_ID=$worker"
}

COMMON=(--dashboard-agent-listen-port=0 --object-store-memory "$STORE_BYTES"
        --disable-usage-stats)

cmd_up() {
  [[ -n $RAY ]] || die "ray is not installed: pip install -e '.[cluster]'"
  if node_alive head || node_alive worker; then
    die "already up (state in $DIR): 'down' first, or 'restart-head' / 'restart-worker'"
  fi
  if [[ -n $(all_pids) ]]; then  # what a dead node left behind: nothing serves, clear it
    echo "cluster/local.sh: clearing what a dead node left ($(all_pids | wc -l) processes)" >&2
    stop_all
  fi
  mkdir -p "$DIR"; chmod 700 "$DIR"
  if [[ ! -s $DIR/auth_token ]]; then
    (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$DIR/auth_token")
  fi
  auth_env
  start_head
  start_worker
  wait_and_export
}

cmd_restart_head() {
  [[ -f $DIR/auth_token ]] || die "never started here (state in $DIR): run 'up'"
  auth_env
  # a new GCS is a new cluster: the old worker cannot rejoin it, so it restarts too
  stop_all
  start_head
  start_worker
  wait_and_export
}

cmd_restart_worker() {
  [[ -f $DIR/auth_token ]] || die "never started here (state in $DIR): run 'up'"
  node_alive head || die "the head is down: use 'restart-head'"
  auth_env
  stop_sessions worker
  start_worker
  wait_and_export
}

# SIGTERM the node sessions, wait, SIGKILL what is left; fail if anything survives.
stop_sessions() {
  local pids i
  pids=$(for n in "$@"; do session_pids "$n"; done)
  [[ -z $pids ]] && return 0
  kill -TERM $pids 2>/dev/null || true
  for i in $(seq 20); do
    pids=$(for n in "$@"; do session_pids "$n"; done)
    [[ -z $pids ]] && return 0
    sleep 0.5
  done
  kill -KILL $pids 2>/dev/null || true
  sleep 0.5
  pids=$(for n in "$@"; do session_pids "$n"; done)
  [[ -z $pids ]] || die "processes survived SIGKILL: $pids"
}

# Both node sessions and the strays; the sid files go with them.
stop_all() {
  stop_sessions worker head
  local pids
  pids=$(stray_pids)
  if [[ -n $pids ]]; then
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
    pids=$(stray_pids)
    [[ -z $pids ]] || die "processes survived SIGKILL: $pids"
  fi
  rm -f "$DIR/head.sid" "$DIR/worker.sid"
}

cmd_down() {
  stop_all
  echo "cluster/local.sh: down (no process of it left)" >&2
}

cmd_kill() {
  local pids
  pids=$(session_pids "$1")
  [[ -n $pids ]] || die "no $1 node is running"
  kill -KILL $pids
  echo "cluster/local.sh: $1 node killed (pids $(echo $pids))" >&2
}

cmd_status() {
  local node pids
  for node in head worker; do
    pids=$(session_pids "$node")
    if node_alive "$node"; then echo "$node: up ($(echo "$pids" | wc -l) processes)"
    elif [[ -n $pids ]]; then echo "$node: dead ($(echo "$pids" | wc -l) processes left; 'down' clears them)"
    else echo "$node: down"; fi
  done
  pids=$(stray_pids)
  [[ -z $pids ]] || echo "strays: $(echo "$pids" | wc -l) processes naming $DIR ('down' clears them)"
  if node_alive head; then
    auth_env
    "$PYTHON" - "$IP" "$DASH_PORT" <<'EOF' || echo "Ray's state API did not answer"
import sys
from ray.util.state import list_nodes
for n in list_nodes(address=f"http://{sys.argv[1]}:{sys.argv[2]}", detail=True):
    role = "head" if "zeroflow_head" in n.resources_total else (
        "worker" if "zeroflow_worker" in n.resources_total else "other")
    print("node", n.node_id, role, n.state)
EOF
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kill-worker) cmd_kill worker ;;
  kill-head) cmd_kill head ;;
  restart-head) cmd_restart_head ;;
  restart-worker) cmd_restart_worker ;;
  *) echo "usage: cluster/local.sh up|down|status|kill-worker|kill-head|restart-head|restart-worker" >&2; exit 2 ;;
esac
