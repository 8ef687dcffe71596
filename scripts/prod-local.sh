#!/usr/bin/env bash
# The production topology on one machine, without containers: PostgreSQL and Redis (already
# running locally), the API after `outbox db upgrade`, two Celery workers and beat. The same
# processes docker-compose.yml and deploy/k8s run, started the same way.
#
#   scripts/prod-local.sh            # start; Ctrl-C (or SIGTERM) stops everything it started
#
# Settings (environment; defaults in brackets):
#   OUTBOX_PROD_LOCAL_DB      database created on the local PostgreSQL if missing [outbox_prod_local]
#   PG_ADMIN_URL              where to create it [postgresql://postgres@127.0.0.1:5432/postgres]
#   OUTBOX_DATABASE_URL       overrides the two above (the database must exist)
#   OUTBOX_BROKER_URL         [redis://127.0.0.1:6379/0]
#   OUTBOX_ADMIN_TOKEN        [generated, written to $PROD_LOCAL_DIR/admin-token]
#   OUTBOX_UNSUBSCRIBE_SECRET [generated, written to $PROD_LOCAL_DIR/unsubscribe-secret]
#   OUTBOX_AUDIT_SIGNING_KEY  [generated, written to $PROD_LOCAL_DIR/audit-signing-key]
#   OUTBOX_POLICY_DIR         [policies]
#   API_PORT                  [8000]        WORKER_METRICS_PORTS  ["9101 9102"]
#   WORKER_CONCURRENCY        [2]           PROD_LOCAL_DIR        [.outbox/prod-local]
#   OUTBOX_BIN                the outbox executable [.venv/bin/outbox, else `outbox` on PATH]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -n "${OUTBOX_BIN:-}" ]]; then
    OUTBOX="$OUTBOX_BIN"
elif [[ -x "$ROOT/.venv/bin/outbox" ]]; then
    OUTBOX="$ROOT/.venv/bin/outbox"
else
    OUTBOX="$(command -v outbox)" || { echo "prod-local: no outbox executable (make install)" >&2; exit 2; }
fi
PYTHON="$(dirname "$OUTBOX")/python"
[[ -x "$PYTHON" ]] || PYTHON="python3"

RUN_DIR="${PROD_LOCAL_DIR:-$ROOT/.outbox/prod-local}"
API_PORT="${API_PORT:-8000}"
read -r -a METRICS_PORTS <<<"${WORKER_METRICS_PORTS:-9101 9102}"
CONCURRENCY="${WORKER_CONCURRENCY:-2}"
DB_NAME="${OUTBOX_PROD_LOCAL_DB:-outbox_prod_local}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"

mkdir -p "$RUN_DIR"
# A secret from the environment, else one generated once and kept (mode 600) in $RUN_DIR.
secret() {  # secret VARIABLE FILE
    if [[ -z "${!1:-}" ]]; then
        if [[ ! -s "$RUN_DIR/$2" ]]; then
            (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$RUN_DIR/$2")
        fi
        printf -v "$1" '%s' "$(cat "$RUN_DIR/$2")"
    fi
    export "${1?}"
}
secret OUTBOX_ADMIN_TOKEN admin-token
secret OUTBOX_UNSUBSCRIBE_SECRET unsubscribe-secret
# The Ed25519 seed that signs audit checkpoints (docs/audit.md): 32 random bytes, base64url.
secret OUTBOX_AUDIT_SIGNING_KEY audit-signing-key

export OUTBOX_ENVIRONMENT=production
export OUTBOX_BROKER_URL="${OUTBOX_BROKER_URL:-redis://127.0.0.1:6379/0}"
export OUTBOX_DATA_DIR="${OUTBOX_DATA_DIR:-$RUN_DIR/data}"
export OUTBOX_POLICY_DIR="${OUTBOX_POLICY_DIR:-$ROOT/policies}"
export OUTBOX_LOG_JSON="${OUTBOX_LOG_JSON:-true}"

if [[ -z "${OUTBOX_DATABASE_URL:-}" ]]; then
    [[ "$DB_NAME" =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] || { echo "prod-local: bad database name $DB_NAME" >&2; exit 2; }
    "$PYTHON" - "$PG_ADMIN_URL" "$DB_NAME" <<'EOF'
import sys

import psycopg

url, name = sys.argv[1], sys.argv[2]
with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
        conn.execute(f'CREATE DATABASE "{name}"')
        print(f"prod-local: created database {name}", file=sys.stderr)
EOF
    export OUTBOX_DATABASE_URL="${PG_ADMIN_URL%/*}/$DB_NAME"
fi

PIDS=()
stop() {
    trap - INT TERM EXIT
    if ((${#PIDS[@]})); then
        echo "prod-local: stopping ${#PIDS[@]} processes" >&2
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        for _ in $(seq 1 100); do
            alive=0
            for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.2
        done
        kill -KILL "${PIDS[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
    fi
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {  # start NAME ENV... -- ARGV...
    local name="$1"
    shift
    local envs=()
    while [[ "$1" != "--" ]]; do envs+=("$1"); shift; done
    shift
    env "${envs[@]}" "$@" >>"$RUN_DIR/$name.log" 2>&1 &
    PIDS+=("$!")
    echo "$!" >"$RUN_DIR/$name.pid"
    echo "prod-local: $name (pid $!): $*" >&2
}

rm -f "$RUN_DIR/ready"
"$OUTBOX" db upgrade

start api -- "$OUTBOX" serve --host 127.0.0.1 --port "$API_PORT"
for n in 1 2; do
    prom="$RUN_DIR/prometheus-worker$n"
    rm -rf "$prom" && mkdir -p "$prom"
    start "worker$n" PROMETHEUS_MULTIPROC_DIR="$prom" OUTBOX_WORKER_METRICS_PORT="${METRICS_PORTS[$((n - 1))]}" \
        OUTBOX_WORKER_METRICS_HOST=127.0.0.1 \
        -- "$OUTBOX" worker --concurrency "$CONCURRENCY" --hostname "worker$n@%h"
done
start beat -- "$OUTBOX" beat

for _ in $(seq 1 150); do
    if "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$API_PORT/readyz" 2>/dev/null; then
        echo "prod-local: ready — API http://127.0.0.1:$API_PORT, worker metrics on ports ${METRICS_PORTS[*]}," \
            "logs in $RUN_DIR/*.log" >&2
        echo "READY" >"$RUN_DIR/ready"
        break
    fi
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "prod-local: process $pid exited; see $RUN_DIR/*.log" >&2; exit 1; }
    done
    sleep 0.2
done
[[ -f "$RUN_DIR/ready" ]] || { echo "prod-local: the API did not become ready; see $RUN_DIR/api.log" >&2; exit 1; }

# Stay in the foreground; stop everything when any process exits or on Ctrl-C.
wait -n "${PIDS[@]}" || true
echo "prod-local: a process exited; stopping the rest (see $RUN_DIR/*.log)" >&2
exit 1
