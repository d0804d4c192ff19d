#!/usr/bin/env bash
# One MLflow server for every node of a cluster: PostgreSQL backend store, proxied artifacts.
#
#   eval "$(cluster/mlflow-server.sh up)"   # prints: export MLFLOW_TRACKING_URI=http://...
#   cluster/mlflow-server.sh status
#   cluster/mlflow-server.sh down            # stops the server and the PostgreSQL it started
#
# Without ZEROFLOW_MLFLOW_BACKEND, `up` also runs its own PostgreSQL (Debian's `postgresql`
# package: apt-get install postgresql) in $ZEROFLOW_MLFLOW_DIR/pgdata, listening on 127.0.0.1
# only, with a generated password (scram-sha-256); as root it runs it as the `postgres` user,
# since PostgreSQL refuses to run as root, so every folder above the state folder must be
# traversable by `postgres` (checked first). With ZEROFLOW_MLFLOW_BACKEND=postgresql://USER:PW@
# HOST:PORT/DB it uses that database instead (a managed PostgreSQL on a real cluster).
#
# Artifacts are proxied: clients upload through the server (mlflow-artifacts:/), which writes to
# ZEROFLOW_MLFLOW_ARTIFACTS, so nodes need only the server's URL, not the artifact store. The
# server runs with umask 077: artifacts, logs and secrets are written owner-only; the state
# folder is 0700 (0711 as root, so that `postgres` can reach pgdata, which it owns).
#
# Settings (environment):
#   ZEROFLOW_MLFLOW_DIR        state folder: pgdata, password, logs, pids (/tmp/zeroflow-mlflow)
#   ZEROFLOW_MLFLOW_BACKEND    an existing PostgreSQL URI (default: start one here)
#   ZEROFLOW_PG_PORT           port of the PostgreSQL started here (5433)
#   ZEROFLOW_MLFLOW_ARTIFACTS  artifact destination: a local folder or s3://... (DIR/artifacts)
#   ZEROFLOW_MLFLOW_HOST       address the server binds (127.0.0.1). Bind a private address
#                              (e.g. 10.0.0.5) only when other machines must reach it: MLflow
#                              has no authentication here, so never a public one.
#   ZEROFLOW_MLFLOW_PORT       (5000)
#   ZEROFLOW_MLFLOW_ALLOWED_HOSTS  extra Host names nodes use to reach the server (comma-
#                              separated, e.g. head-svc,head-svc:5000); MLflow 3 refuses others
#   ZEROFLOW_MLFLOW_WORKERS    server worker processes (2)
set -euo pipefail
umask 077  # everything written here (secrets, logs, the server's artifacts) is owner-only

DIR=${ZEROFLOW_MLFLOW_DIR:-/tmp/zeroflow-mlflow}
PG_PORT=${ZEROFLOW_PG_PORT:-5433}
HOST=${ZEROFLOW_MLFLOW_HOST:-127.0.0.1}
PORT=${ZEROFLOW_MLFLOW_PORT:-5000}
ARTIFACTS=${ZEROFLOW_MLFLOW_ARTIFACTS:-$DIR/artifacts}
WORKERS=${ZEROFLOW_MLFLOW_WORKERS:-2}
MLFLOW=${ZEROFLOW_MLFLOW_BIN:-$(command -v mlflow || true)}

die() { echo "cluster/mlflow-server.sh: $*" >&2; exit 1; }

pg_bin() {
  local bin
  bin=${ZEROFLOW_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
  [[ -n $bin && -x $bin/pg_ctl ]] && { echo "$bin"; return; }
  bin=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
  [[ -x $bin/pg_ctl ]] || die "PostgreSQL is not installed (apt-get install postgresql), or set ZEROFLOW_MLFLOW_BACKEND to an existing one"
  echo "$bin"
}

# Run a PostgreSQL program as its owner: `postgres` when we are root, else ourselves.
as_pg() {
  if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (apt-get install postgresql creates it)"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# As root, PostgreSQL runs as `postgres`, which must traverse every folder above the state
# folder (initdb otherwise fails with "Permission denied" on its password file). Name the
# first one that blocks it. Folders not made yet are created traversable by `up`.
check_postgres_reaches_dir() {
  local blocker
  # shellcheck disable=SC2016  # $1 and $p expand in the postgres user's shell
  blocker=$(as_pg bash -c 'p=; IFS=/ read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
      [[ -n $part ]] || continue; p=$p/$part
      [[ $p != "$1" && -e $p ]] || exit 0
      [[ -x $p ]] || { echo "$p"; exit 0; }
    done' _ "$DIR")
  [[ -z $blocker ]] || die "the postgres user cannot reach $DIR: $blocker (mode $(stat -c '%a, owner %U' "$blocker")) is not traversable by others; set ZEROFLOW_MLFLOW_DIR to a folder outside it (e.g. /var/lib/zeroflow-mlflow) or run: chmod o+x $blocker"
}

session_pids() {
  [[ -f $DIR/mlflow.sid ]] || return 0
  ps -eo pid=,sid=,stat= | awk -v s="$(cat "$DIR/mlflow.sid")" '$2 == s && $3 !~ /^Z/ { print $1 }'
}

pg_running() { [[ -f $DIR/pgdata/postmaster.pid ]] && as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pgdata" status >/dev/null 2>&1; }

start_postgres() {
  local bin; bin=$(pg_bin)
  if [[ ! -f $DIR/pgdata/PG_VERSION ]]; then
    (umask 077; "${PYTHON:-python3}" -c 'import secrets; print(secrets.token_hex(24))' >"$DIR/pg_password")
    mkdir -p "$DIR/pgdata" "$DIR/pgsock"
    local pwfile="$DIR/pgsock/pwfile"
    cp "$DIR/pg_password" "$pwfile"
    if [[ $(id -u) == 0 ]]; then chown postgres "$DIR/pgdata" "$DIR/pgsock" "$pwfile"; fi
    chmod 700 "$DIR/pgdata" "$DIR/pgsock"
    as_pg "$bin/initdb" -D "$DIR/pgdata" -U zeroflow --pwfile="$pwfile" --auth=scram-sha-256 \
      -E UTF8 >"$DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; tail -n 5 "$DIR/initdb.log" >&2; die "initdb failed (log: $DIR/initdb.log)"; }
    rm -f "$pwfile"
  fi
  touch "$DIR/postgres.log"
  if [[ $(id -u) == 0 ]]; then chown postgres "$DIR/postgres.log"; fi
  as_pg "$bin/pg_ctl" -D "$DIR/pgdata" -l "$DIR/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $DIR/pgsock -c listen_addresses=127.0.0.1" start >/dev/null \
    || { tail -n 5 "$DIR/postgres.log" >&2; die "PostgreSQL did not start (log: $DIR/postgres.log)"; }
  local pw; pw=$(cat "$DIR/pg_password")
  if ! PGPASSWORD=$pw "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U zeroflow -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1; then
    PGPASSWORD=$pw "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U zeroflow mlflow
  fi
  echo "postgresql://zeroflow:$pw@127.0.0.1:$PG_PORT/mlflow"
}

cmd_up() {
  [[ -n $MLFLOW ]] || die "mlflow is not installed: pip install -e '.[cluster]'"
  [[ -z $(session_pids) ]] || die "already up (state in $DIR); run 'down' first"
  local backend=${ZEROFLOW_MLFLOW_BACKEND:-}
  local own_pg_as_root=0
  [[ -n $backend || $(id -u) != 0 ]] || own_pg_as_root=1
  ((own_pg_as_root == 0)) || check_postgres_reaches_dir
  (umask 022; mkdir -p "$DIR")  # folders above DIR made here stay traversable
  if ((own_pg_as_root)); then chmod 711 "$DIR"; else chmod 700 "$DIR"; fi
  [[ -n $backend ]] || backend=$(start_postgres)
  if [[ $ARTIFACTS != *://* ]]; then mkdir -p "$ARTIFACTS"; chmod 700 "$ARTIFACTS"; fi
  local allowed="localhost,localhost:$PORT,127.0.0.1,127.0.0.1:$PORT,$HOST,$HOST:$PORT"
  [[ -z ${ZEROFLOW_MLFLOW_ALLOWED_HOSTS:-} ]] || allowed="$allowed,$ZEROFLOW_MLFLOW_ALLOWED_HOSTS"
  # The backend URI holds a password: pass it through the environment, not the command line.
  # MLflow's GenAI job runner (7 processes) serves nothing zeroflow logs: off unless asked.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
  MLFLOW_BACKEND_STORE_URI=$backend setsid bash -c 'echo $$ > "$0"; exec "$@"' "$DIR/mlflow.sid" \
    "$MLFLOW" server --artifacts-destination "$ARTIFACTS" --host "$HOST" --port "$PORT" \
    --workers "$WORKERS" --allowed-hosts "$allowed" >"$DIR/mlflow.log" 2>&1 &
  local i
  for i in $(seq 120); do
    if "${PYTHON:-python3}" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://$HOST:$PORT/health" 2>/dev/null; then
      echo "export MLFLOW_TRACKING_URI=http://$HOST:$PORT"
      return 0
    fi
    [[ -n $(session_pids) ]] || break
    sleep 1
  done
  tail -n 20 "$DIR/mlflow.log" >&2
  cmd_down >&2
  die "the MLflow server did not answer on http://$HOST:$PORT/health (log: $DIR/mlflow.log)"
}

cmd_down() {
  local pids i
  pids=$(session_pids)
  if [[ -n $pids ]]; then
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 20); do [[ -z $(session_pids) ]] && break; sleep 0.5; done
    pids=$(session_pids); [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
  fi
  rm -f "$DIR/mlflow.sid"
  if pg_running; then as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pgdata" -m fast -w stop >/dev/null; fi
  echo "cluster/mlflow-server.sh: down" >&2
}

cmd_status() {
  if [[ -n $(session_pids) ]]; then echo "mlflow: up on http://$HOST:$PORT"; else echo "mlflow: down"; fi
  if pg_running; then echo "postgresql: up on 127.0.0.1:$PG_PORT ($DIR/pgdata)"
  else echo "postgresql: not running here"; fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: cluster/mlflow-server.sh up|down|status" >&2; exit 2 ;;
esac
