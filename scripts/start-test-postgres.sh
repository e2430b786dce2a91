#!/usr/bin/env bash
# Starts a private PostgreSQL for the test suite (own data dir, own port, trust auth on
# loopback only) and prints its admin URL. Idempotent: reuses a running instance.
# Needs Debian's `postgresql` package (scripts/install-test-deps.sh installs it).
set -euo pipefail

PORT="${SERVOS_TEST_PG_PORT:-55432}"
DATA="${SERVOS_TEST_PG_DIR:-/tmp/servos-test-pg}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$BIN/initdb" ] || { echo "PostgreSQL server binaries not found: run scripts/install-test-deps.sh" >&2; exit 1; }
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"; mkdir -p "$DATA"; chown postgres "$DATA" 2>/dev/null || true
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
fi
echo "postgres://postgres@127.0.0.1:$PORT/postgres"
