#!/usr/bin/env bash
# One MLflow server for every node of a cluster: PostgreSQL backend store, proxied artifacts,
# MLflow's basic authentication.
#
#   eval "$(cluster/mlflow-server.sh up)"   # prints three export lines: MLFLOW_TRACKING_URI,
#                                            # MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD
#   cluster/mlflow-server.sh up --no-auth    # a laptop only: no authentication (warns)
#   cluster/mlflow-server.sh status          # what runs, and whether authentication is on
#   cluster/mlflow-server.sh down            # stops the server and the PostgreSQL it started
#
# Without ZEROFLOW_MLFLOW_BACKEND, `up` also runs its own PostgreSQL (Debian's `postgresql`
# package: apt-get install postgresql) in $ZEROFLOW_MLFLOW_DIR/pgdata, listening on 127.0.0.1
# only, with a generated password (scram-sha-256); as root it runs it as the `postgres` user,
# since PostgreSQL refuses to run as root, so every folder above the state folder must be
# traversable by `postgres` (checked first). With ZEROFLOW_MLFLOW_BACKEND=postgresql://USER:PW@
# HOST:PORT/DB it uses that database instead (a managed PostgreSQL on a real cluster).
#
# Authentication (on unless `up --no-auth`): `mlflow server --app-name basic-auth`. Every request
# but /health needs a user and password (401 without); the admin user `admin` gets a generated
# password, kept in $ZEROFLOW_MLFLOW_DIR/mlflow_admin_password (0600) and used again by later
# `up`s. Users and permissions live in the auth database: by default an SQLite file beside the
# PostgreSQL data, $ZEROFLOW_MLFLOW_DIR/basic_auth.db (0600); ZEROFLOW_MLFLOW_AUTH_DB names
# another (an SQLAlchemy URI, e.g. a second database `mlflow_auth` on the managed PostgreSQL of
# ZEROFLOW_MLFLOW_BACKEND: never the backend's own database). Users other than admins see only
# what they were granted (default_permission = NO_PERMISSIONS). Basic auth sends the password
# with every request in clear text over plain HTTP: keep the server on a private network.
#
# Artifacts are proxied: clients upload through the server (mlflow-artifacts:/), which writes to
# ZEROFLOW_MLFLOW_ARTIFACTS, so nodes need only the server's URL, not the artifact store. The
# server runs with umask 077: artifacts, logs and secrets are written owner-only; the state
# folder is 0700 (0711 as root, so that `postgres` can reach pgdata, which it owns).
#
# Settings (environment):
#   ZEROFLOW_MLFLOW_DIR        state folder: pgdata, passwords, auth database, logs, pids
#                              (/tmp/zeroflow-mlflow)
#   ZEROFLOW_MLFLOW_BACKEND    an existing PostgreSQL URI (default: start one here)
#   ZEROFLOW_MLFLOW_AUTH_DB    the auth database's URI (default: sqlite:///DIR/basic_auth.db)
#   ZEROFLOW_PG_PORT           port of the PostgreSQL started here (5433)
#   ZEROFLOW_MLFLOW_ARTIFACTS  artifact destination: a local folder or s3://... (DIR/artifacts)
#   ZEROFLOW_MLFLOW_HOST       address the server binds (127.0.0.1). Bind a private address
#                              (e.g. 10.0.0.5) only when other machines must reach it, never a
#                              public one: passwords and artifacts travel unencrypted.
#   ZEROFLOW_MLFLOW_PORT       (5000)
#   ZEROFLOW_MLFLOW_ALLOWED_HOSTS  extra Host names nodes use to reach the server (comma-
#                              separated, e.g. head-svc,head-svc:5000); MLflow 3 refuses others
#   ZEROFLOW_MLFLOW_WORKERS    server worker processes (2)
set -euo pipefail
umask 077  # everything written here (secrets, logs, the server's artifacts) is owner-only

DIR=${ZEROFLOW_MLFLOW_DIR:-/tmp/zeroflow-mlflow}
[[ $DIR == /* ]] || DIR=$PWD/$DIR  # the auth database's sqlite:/// URI needs an absolute path
PG_PORT=${ZEROFLOW_PG_PORT:-5433}
HOST=${ZEROFLOW_MLFLOW_HOST:-127.0.0.1}
PORT=${ZEROFLOW_MLFLOW_PORT:-5000}
ARTIFACTS=${ZEROFLOW_MLFLOW_ARTIFACTS:-$DIR/artifacts}
WORKERS=${ZEROFLOW_MLFLOW_WORKERS:-2}
MLFLOW=${ZEROFLOW_MLFLOW_BIN:-$(command -v mlflow || true)}
PY=${PYTHON:-python3}
ADMIN="admin"
ADMIN_PASSWORD_FILE=$DIR/mlflow_admin_password

die() { echo "cluster/mlflow-server.sh: $*" >&2; exit 1; }

pg_bin() {
  local bin
  bin=${ZEROFLOW_PG_BIN:-$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
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

# A random secret into a new owner-only file (kept if it exists: later `up`s reuse it).
make_secret() {
  [[ -s $1 ]] || "$PY" -c 'import secrets; print(secrets.token_hex(24))' >"$1"
  chmod 600 "$1"
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
    make_secret "$DIR/pg_password"
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

# MLflow's basic-auth app reads its settings from the ini named by MLFLOW_AUTH_CONFIG_PATH;
# the admin password and the Flask secret reach the server through its environment.
write_auth_config() {
  local db=${ZEROFLOW_MLFLOW_AUTH_DB:-sqlite:///$DIR/basic_auth.db}
  [[ $db != *$'\n'* ]] || die "ZEROFLOW_MLFLOW_AUTH_DB holds a line break: give one SQLAlchemy URI"
  make_secret "$ADMIN_PASSWORD_FILE"
  make_secret "$DIR/flask_secret_key"
  # default_permission applies to a user on what nobody granted them. MLflow's default, READ,
  # would let every account read every run and artifact; NO_PERMISSIONS lets a user see and
  # change only the experiments they created (MLflow grants their creator MANAGE) or were
  # granted, and admins everything. Requests without valid credentials get 401 regardless.
  # Checking a password costs ~0.4 s of CPU (scrypt) and the client sends it with every
  # request (a 2-trial sweep makes hundreds): each server worker remembers a good one for 60 s,
  # so a changed password or a deleted user stays valid up to 60 s on the other workers.
  # ConfigParser interpolates '%', so a URL-encoded password's '%' is written as '%%'.
  cat >"$DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${db//%/%%}
admin_username = $ADMIN
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
EOF
}

# Prints the HTTP status of an API request: without credentials, or with those of the
# user named by $1 whose password is in the file $2. urllib raises on 4xx: print the code.
probe() {
  "$PY" - "http://$HOST:$PORT/api/2.0/mlflow/experiments/search?max_results=1" "$@" <<'EOF'
import base64, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    with open(sys.argv[3]) as f:
        token = base64.b64encode(f"{sys.argv[2]}:{f.read().strip()}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print("no answer")
EOF
}

cmd_up() {
  local auth=on
  while (($#)); do
    case $1 in
      --no-auth) auth=off ;;
      *) die "unknown option for up: '$1' (the only one is --no-auth)" ;;
    esac
    shift
  done
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
  local app=()
  if [[ $auth == on ]]; then
    write_auth_config
    app=(--app-name basic-auth)
    export MLFLOW_AUTH_CONFIG_PATH=$DIR/basic_auth.ini MLFLOW_AUTH_ADMIN_USERNAME=$ADMIN
    MLFLOW_AUTH_ADMIN_PASSWORD=$(cat "$ADMIN_PASSWORD_FILE")
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$DIR/flask_secret_key")
    export MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  # Secrets (the backend URI, the admin password) go through the environment, never the
  # command line. MLflow's GenAI job runner (7 processes) serves nothing zeroflow logs: off
  # unless asked.
  # shellcheck disable=SC2016  # $$ and $0 expand in the new session's shell
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
  MLFLOW_BACKEND_STORE_URI=$backend setsid bash -c 'echo $$ > "$0"; exec "$@"' "$DIR/mlflow.sid" \
    "$MLFLOW" server "${app[@]}" --artifacts-destination "$ARTIFACTS" --host "$HOST" \
    --port "$PORT" --workers "$WORKERS" --allowed-hosts "$allowed" >"$DIR/mlflow.log" 2>&1 &
  local answer=
  for _ in $(seq 120); do
    if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://$HOST:$PORT/health" 2>/dev/null; then
      answer=health
      break
    fi
    [[ -n $(session_pids) ]] || break
    sleep 1
  done
  if [[ -z $answer ]]; then
    tail -n 20 "$DIR/mlflow.log" >&2
    cmd_down >&2
    if grep -q 'requires the Flask-WTF package' "$DIR/mlflow.log"; then
      die "MLflow's basic-auth app needs Flask-WTF: pip install -e '.[cluster]' (or 'mlflow[auth]'); on a laptop only, 'up --no-auth' runs without authentication"
    fi
    die "the MLflow server did not answer on http://$HOST:$PORT/health (log: $DIR/mlflow.log)"
  fi
  if [[ $auth == off ]]; then
    echo "cluster/mlflow-server.sh: warning: authentication is off (--no-auth): anyone who reaches http://$HOST:$PORT can read and change runs and artifacts" >&2
    echo "export MLFLOW_TRACKING_URI=http://$HOST:$PORT"
    return 0
  fi
  # Check what we are about to print: no credentials must be refused, ours accepted.
  local anonymous admin
  anonymous=$(probe); admin=$(probe "$ADMIN" "$ADMIN_PASSWORD_FILE")
  if [[ $anonymous != 401 || $admin != 200 ]]; then
    cmd_down >&2
    if [[ $admin == 401 ]]; then
      die "the auth database already has an admin '$ADMIN' whose password is not the one in $ADMIN_PASSWORD_FILE: put the current one there (or delete the auth database to start over: that drops its users and permissions)"
    fi
    die "authentication check failed: HTTP $anonymous without credentials (want 401), $admin as $ADMIN (want 200); log: $DIR/mlflow.log"
  fi
  echo "export MLFLOW_TRACKING_URI=http://$HOST:$PORT"
  echo "export MLFLOW_TRACKING_USERNAME=$ADMIN"
  echo "export MLFLOW_TRACKING_PASSWORD=$(cat "$ADMIN_PASSWORD_FILE")"
}

cmd_down() {
  local pids
  pids=$(session_pids)
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086  # one pid per word
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 20); do [[ -z $(session_pids) ]] && break; sleep 0.5; done
    pids=$(session_pids)
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
  fi
  rm -f "$DIR/mlflow.sid"
  if pg_running; then as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pgdata" -m fast -w stop >/dev/null; fi
  echo "cluster/mlflow-server.sh: down" >&2
}

cmd_status() {
  if [[ -n $(session_pids) ]]; then
    case $(probe) in
      401) echo "mlflow: up on http://$HOST:$PORT, authentication on (user $ADMIN, password in $ADMIN_PASSWORD_FILE)" ;;
      200) echo "mlflow: up on http://$HOST:$PORT, authentication OFF: anyone who reaches the port can read and change runs and artifacts" ;;
      *) echo "mlflow: running (state in $DIR) but not answering on http://$HOST:$PORT" ;;
    esac
  else
    echo "mlflow: down"
  fi
  if pg_running; then echo "postgresql: up on 127.0.0.1:$PG_PORT ($DIR/pgdata)"
  else echo "postgresql: not running here"; fi
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: cluster/mlflow-server.sh up [--no-auth]|down|status" >&2; exit 2 ;;
esac
