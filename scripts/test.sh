#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (sshd, dockerd,
# PostgreSQL, …), starts a private PostgreSQL, then runs every test on SQLite and the
# database-backed tests again on PostgreSQL. Needs root (test hosts are network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

# A failing test's panic message must be the last thing it prints (CI shows the tail of
# the output, and a backtrace would push the message out of it).
export RUST_BACKTRACE=0

scripts/install-test-deps.sh
PG_URL="$(scripts/start-test-postgres.sh)"

runner=(cargo test --workspace --no-fail-fast --features servos/ebpf)
if cargo nextest --version >/dev/null 2>&1; then
    runner=(cargo nextest run --workspace --no-fail-fast --failure-output final --features servos/ebpf)
fi

echo "== tests on SQLite =="
env -u SERVOS_TEST_DATABASE_URL "${runner[@]}"

echo "== database-backed tests on PostgreSQL ($PG_URL) =="
db_crates=(-p servos-store -p servos-api -p servos)
[ -d crates/servos-deploy ] && db_crates+=(-p servos-deploy)
if cargo nextest --version >/dev/null 2>&1; then
    SERVOS_TEST_DATABASE_URL="$PG_URL" cargo nextest run --no-fail-fast --failure-output final --features servos/ebpf "${db_crates[@]}"
else
    SERVOS_TEST_DATABASE_URL="$PG_URL" cargo test --no-fail-fast --features servos/ebpf "${db_crates[@]}"
fi
