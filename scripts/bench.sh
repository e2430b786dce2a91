#!/usr/bin/env bash
# Builds the release binaries and runs every ServOS benchmark (servos-bench), then prints
# a summary block of the figures, each ratio with its goal and PASS/MISS.
#
#   scripts/bench.sh                 # all: control-plane, vault, ssh, deploy, webhooks, transfer, proxy, agent
#   scripts/bench.sh vault ssh       # only some
#
# The ssh, deploy and proxy benchmarks need root, sshd and dockerd (proxy: caddy too) (scripts/install-test-deps.sh). Benchmarks print
# figures; they never fail the build. This script exits non-zero only if a benchmark could
# not run at all. About 3 minutes after the build on a 2-core machine.
set -euo pipefail

cd "$(dirname "$0")/.."

benches=("$@")
if ((${#benches[@]} == 0)); then
    benches=(control-plane vault ssh deploy webhooks transfer proxy agent)
fi

echo "bench.sh: building release binaries (servos, servos-bench)"
cargo build --release -p servos -p servos-bench --features servos/ebpf

# The agent benchmark compares the mesh with boringtun-cli (configured with `wg` from
# wireguard-tools): installed once under target/boringtun, only when missing.
if [[ " ${benches[*]} " == *" agent "* && ! -x target/boringtun/bin/boringtun-cli ]]; then
    echo "bench.sh: installing boringtun-cli 0.7.1 into target/boringtun"
    cargo install boringtun-cli --version 0.7.1 --locked --root target/boringtun
fi

log=$(mktemp -t servos-bench-log.XXXXXX)
trap 'rm -f "$log"' EXIT

failed=()
started=$SECONDS
for b in "${benches[@]}"; do
    echo
    echo "################ servos-bench $b ################"
    # Bounded: a benchmark that hangs is stopped and reported as failed. `deploy` waits for
    # real containers (at least 3 s of uptime per deploy), so it gets longer.
    limit=240
    if [[ $b == deploy ]]; then limit=420; fi
    # `agent` runs 5 interleaved rounds of 256 MiB over three paths plus the detached rows.
    if [[ $b == agent ]]; then limit=420; fi
    if ! timeout --kill-after=10 "$limit" ./target/release/servos-bench "$b" 2>&1 | tee -a "$log"; then
        failed+=("$b")
    fi
done

echo
echo "================ summary ($((SECONDS - started)) s, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)) ================"
grep '^summary: ' "$log" | sed 's/^summary: /  /' || true
if ((${#failed[@]} > 0)); then
    echo "  did not complete: ${failed[*]}"
    exit 1
fi
