#!/usr/bin/env bash
# Every check and every test, in the order that fails fastest: formatting, lints, dependency
# policy, then the tests against real servers. This is what CI runs (.ci/run).
#
# PostgreSQL: unless DATABASE_URL is already set, one private cluster is started for the whole
# run (initdb in a temp dir, TCP on 127.0.0.1 and a unix socket in that dir), exported as
# DATABASE_URL, and stopped on exit. Every test creates its own database on it. Run without this
# script, the test harness starts a private cluster per test process instead (slower under
# nextest, which runs each test in its own process).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian installs server binaries outside an ordinary user's PATH.
export PATH="$PATH:/usr/sbin:/sbin:${CARGO_HOME:-$HOME/.cargo}/bin"
if [[ -n ${CI:-} ]]; then
    # Incremental artefacts only help rebuilds, which CI never does; they cost time and disk.
    export CARGO_INCREMENTAL=0
fi

run_started=$SECONDS

# step NAME COMMAND... : runs one step, stopping the whole run if it fails.
step() {
    local name=$1 started=$SECONDS status=0
    shift
    printf '\n==> %s\n' "$name"
    "$@" || status=$?
    if ((status != 0)); then
        printf '\n==> FAILED: %s (exit %d): %s\n' "$name" "$status" "$*" >&2
        exit "$status"
    fi
    printf '==> %s: ok (%ds)\n' "$name" $((SECONDS - started))
}

pg_root=""
pg_bin=""
as_postgres=()

start_postgres() {
    pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n1)
    if [[ -z $pg_bin ]]; then
        pg_bin=$(dirname "$(command -v initdb)") || return 1
    fi
    pg_root=$(mktemp -d -t sy-postgres-XXXXXX) || return 1
    mkdir "$pg_root/socket" || return 1
    if [[ $(id -u) -eq 0 ]]; then
        # PostgreSQL refuses to run as root.
        chown -R postgres: "$pg_root" || return 1
        as_postgres=(runuser -u postgres --)
    fi
    # In the cluster's own directory: the caller's may not be readable by the postgres user.
    (cd "$pg_root" && "${as_postgres[@]}" "$pg_bin/initdb" -D data -U postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync) >"$pg_root/initdb.log" 2>&1 || {
        cat "$pg_root/initdb.log" >&2
        return 1
    }
    # PostgreSQL cannot pick its own port: try random ones below the ephemeral range until one
    # binds. fsync is off because the data is thrown away at exit.
    local attempt port
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$((20000 + RANDOM % 12000))
        if (cd "$pg_root" && "${as_postgres[@]}" "$pg_bin/pg_ctl" -D data -l postgres.log -w -t 60 \
            -o "-p $port -h 127.0.0.1 -k $pg_root/socket -c fsync=off -c synchronous_commit=off \
                -c full_page_writes=off -c max_connections=300" start) >/dev/null 2>&1; then
            export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
            echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on port $port (attempt $attempt)"
            return 0
        fi
    done
    tail -n 20 "$pg_root/postgres.log" >&2
    return 1
}

stop_postgres() {
    [[ -n $pg_root ]] || return 0
    (cd "$pg_root" && "${as_postgres[@]}" "$pg_bin/pg_ctl" -D data -m immediate stop) >/dev/null 2>&1 || true
    rm -rf "$pg_root"
    pg_root=""
}

trap stop_postgres EXIT
# Without these, an interrupted run would skip the EXIT trap and leave PostgreSQL running.
trap 'exit 130' INT
trap 'exit 143' TERM

step "setup" ./scripts/setup.sh
step "format" cargo fmt --all --check
# Every platform's dependencies, not just this one's: the dependency policy check reads them all.
step "fetch" cargo fetch --locked
step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "dependency policy" cargo deny --offline check bans licenses sources
if [[ -z ${DATABASE_URL:-} ]]; then
    step "postgresql" start_postgres
fi
if cargo nextest --version >/dev/null 2>&1; then
    step "tests" cargo nextest run --workspace --locked
else
    step "tests" cargo test --workspace --locked
fi
# nextest does not run doc tests.
step "doc tests" cargo test --workspace --doc --locked

printf '\nAll checks passed in %dm%02ds.\n' $((($SECONDS - run_started) / 60)) $((($SECONDS - run_started) % 60))
