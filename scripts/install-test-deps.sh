#!/usr/bin/env bash
# Installs what the integration tests need to build real test hosts (network namespaces,
# sshd, dockerd) on this machine. Idempotent: installs only what is missing, safe to run
# twice. Needs root (the tests need root too).
set -euo pipefail

packages=(openssh-server openssh-client iproute2 docker.io busybox-static postgresql git procps util-linux docker-registry apache2-utils pebble caddy)
packages+=(clang) # builds the agent's eBPF classifier (cargo feature ebpf)
packages+=(nftables) # the DNAT rules of the stable upstream addresses Caddy dials (issue 7)
packages+=(wireguard-tools) # `wg`: configures boringtun-cli for the agent benchmark (scripts/bench.sh agent)
packages+=(bpftool) # detaches the agent classifier for the "classifier detached" row of scripts/bench.sh agent

if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps.sh: must run as root (apt-get, and the tests create network namespaces)" >&2
    exit 1
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} > 0)); then
    echo "install-test-deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d stops the packages' postinst from starting sshd/dockerd/postgresql and
    # docker-registry and caddy in the root namespace: a root-namespace dockerd sets FORWARD to DROP
    # and breaks the test bridge (the registry tests start their own registry in a host).
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    trap 'if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi' EXIT
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
else
    echo "install-test-deps.sh: all of ${packages[*]} already installed"
fi

# The test kit keeps per-host state under /var/tmp and /run; make sure both exist.
mkdir -p /var/tmp /run
