#!/usr/bin/env bash
# Installs what building and testing Switchyard needs beyond a Rust toolchain, on Debian or
# Ubuntu: nats-server and PostgreSQL from the distribution, cargo-deny from crates.io.
# Idempotent: installs only what is missing, so it is cheap to run before every test run.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Debian installs server binaries outside an ordinary user's PATH.
export PATH="$PATH:/usr/sbin:/sbin:${CARGO_HOME:-$HOME/.cargo}/bin"

packages=()
command -v nats-server >/dev/null || packages+=(nats-server)
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
pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n1)
say "$("${pg_bin:-$(dirname "$(command -v initdb)")}/postgres" --version)"

if ! cargo deny --version >/dev/null 2>&1; then
    say "installing cargo-deny (takes a few minutes)"
    cargo install --locked --quiet cargo-deny
fi
say "$(cargo deny --version)"
