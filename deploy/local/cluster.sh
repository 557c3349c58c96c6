#!/usr/bin/env bash
# The production topology as plain processes on this machine, for trying it and for the
# end-to-end test tests/tests/local_cluster.rs: a three-node NATS JetStream cluster from
# deploy/nats/nats.conf, PostgreSQL, the first admin, two engines with --stream-replicas 3 and
# three workers, all on loopback.
#
#   deploy/local/cluster.sh up                 start everything, wait until it is ready
#   deploy/local/cluster.sh status             every process with its pid and whether it runs
#   deploy/local/cluster.sh worker add         one more worker (scale out); prints its name
#   deploy/local/cluster.sh worker remove [N]  SIGTERM worker N (default: the newest) and wait
#                                              while it drains (scale in)
#   deploy/local/cluster.sh stop NAME          SIGTERM one process (engine-1, nats-0, …)
#   deploy/local/cluster.sh kill NAME          SIGKILL one process, as the loss of its machine
#   deploy/local/cluster.sh down               stop everything started and remove the state
#
# State (ports, URLs, pids, logs, stores, the master key, the admin token) lives in
# $SWITCHYARD_CLUSTER_DIR, default deploy/local/.state. `up` writes `cluster.env` there:
# KEY=value lines (NATS_URL, DATABASE_URL, ENGINE_URLS, SWITCHYARD_URL, ADMIN_TOKEN_FILE, …).
#
# Environment read by `up`:
#   DATABASE_URL                a PostgreSQL database to use as it is (the engines migrate
#                               it); without one, a private cluster is initdb'ed in a temp dir
#                               and removed by `down`
#   SWITCHYARD_BIN              the switchyard binary (default: $CARGO_TARGET_DIR or target/,
#                               debug, built when missing)
#   SWITCHYARD_CLUSTER_NATS_SERVER  nats-server >= 2.10 (default: the one scripts/setup.sh
#                               puts in .tools/, installed when missing)
#   SWITCHYARD_ALLOW_OUTBOUND   passed on to engines and workers (e.g. 127.0.0.1 to let steps
#                               call services on this machine)
#   SWITCHYARD_CLUSTER_WORKERS  workers to start (default 3)
#   SWITCHYARD_CLUSTER_WATCH_PID  when set, everything is stopped once that process ends
#                               (a test that dies without calling `down` leaves nothing behind)
#   RUST_LOG                    the processes' log filter (default info)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${SWITCHYARD_CLUSTER_DIR:-$root/deploy/local/.state}
nats_version=2.15.1
# Longer than a worker's drain (30 s) plus its abandon and flush grace (5 s each).
worker_stop_within=60
# How long the NATS cluster, the engines and the workers may each take to become ready.
ready_within=90

say() { printf 'cluster: %s\n' "$*" >&2; }
die() {
    printf 'cluster: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '/^#   deploy/s/^#   //p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# --- small tools -----------------------------------------------------------------------------

# A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice, as the tests' own
# harness picks them).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 12000))
}

# http_ok PORT PATH: whether GET http://127.0.0.1:PORT/PATH answers 200. Plain bash, so it needs
# no HTTP client on the machine.
http_ok() {
    local port=$1 path=$2 line
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    IFS= read -r -t 5 line <&3 || line=""
    exec 3<&-
    [[ $line == *" 200 "* ]]
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds; fails once SECONDS
# have passed.
wait_for() {
    local within=$1 deadline
    shift
    deadline=$((SECONDS + within))
    until "$@" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

pid_of() { cat "$state/pids/$1.pid" 2>/dev/null; }

# Whether process NAME runs, checking the pid still belongs to the program we started (a pid
# recorded long ago may have been reused by another process).
running() {
    local pid
    pid=$(pid_of "$1") || return 1
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    # Read whole, not piped into `grep -q`: grep leaving early would fail the pipeline.
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    # Right after `spawn` the child may not have exec'ed its program yet, and still carries
    # this script's command line.
    [[ $cmdline == *switchyard* || $cmdline == *nats-server* || $cmdline == *cluster.sh* ]]
}

not_running() { ! running "$1"; }

# alive_and CHECK NAME: CHECK NAME, except that a process that has exited ends the wait at
# once (wait_for stops on success, so "exited" reports success and the caller looks again).
alive_and() {
    running "$2" || return 0
    "$1" "$2"
}

# spawn NAME PROGRAM ARGS...: starts a process in the background with its output in
# logs/NAME.log and standard input closed, and records its pid.
spawn() {
    local name=$1
    shift
    "$@" </dev/null >>"$state/logs/$name.log" 2>&1 &
    echo $! >"$state/pids/$name.pid"
}

# signal_and_wait NAME SIGNAL SECONDS: sends SIGNAL and waits for the process to exit, killing
# it once SECONDS have passed.
signal_and_wait() {
    local name=$1 signal=$2 within=$3 pid
    running "$name" || { rm -f "$state/pids/$name.pid"; return 0; }
    pid=$(pid_of "$name")
    kill "-$signal" "$pid" 2>/dev/null || true
    # `running`, not `kill -0`: an exited process whose parent has not reaped it still
    # answers `kill -0`, but has no command line any more.
    if ! wait_for "$within" not_running "$name"; then
        say "$name did not exit within ${within}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$state/pids/$name.pid"
}

env_value() { sed -n "s/^$1=//p" "$state/cluster.env" 2>/dev/null | head -n1; }

# --- pieces ----------------------------------------------------------------------------------

find_binary() {
    bin=${SWITCHYARD_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/switchyard}
    if [[ ! -x $bin ]]; then
        [[ -z ${SWITCHYARD_BIN:-} ]] || die "SWITCHYARD_BIN=$bin is not an executable"
        say "building switchyard"
        (cd "$root" && cargo build --locked -p engine --bin switchyard) >&2
    fi
    [[ -x $bin ]] || die "$bin is missing after the build"
}

find_nats() {
    nats=${SWITCHYARD_CLUSTER_NATS_SERVER:-$root/.tools/nats-server-$nats_version/nats-server}
    if [[ ! -x $nats && -z ${SWITCHYARD_CLUSTER_NATS_SERVER:-} ]]; then
        say "nats-server $nats_version is missing; running scripts/setup.sh"
        "$root/scripts/setup.sh" >&2
    fi
    [[ -x $nats ]] || die "$nats is missing: deploy/nats/nats.conf needs nats-server 2.10 or later"
}

start_nats() {
    local i client cluster monitor routes=() clients=() monitors=()
    local -a ports
    for i in 0 1 2; do
        ports[i]="$(free_port) $(free_port) $(free_port)"
        read -r client cluster monitor <<<"${ports[i]}"
        routes+=("nats://127.0.0.1:$cluster")
        clients+=("nats://127.0.0.1:$client")
        monitors+=("$monitor")
    done
    for i in 0 1 2; do
        read -r client cluster monitor <<<"${ports[i]}"
        mkdir -p "$state/nats-$i"
        spawn "nats-$i" env \
            NATS_SERVER_NAME="nats-$i" NATS_HOST=127.0.0.1 \
            NATS_CLIENT_PORT="$client" NATS_CLUSTER_PORT="$cluster" NATS_MONITOR_PORT="$monitor" \
            NATS_STORE_DIR="$state/nats-$i" \
            NATS_ROUTE_1="${routes[0]}" NATS_ROUTE_2="${routes[1]}" NATS_ROUTE_3="${routes[2]}" \
            "$nats" -c "$root/deploy/nats/nats.conf"
    done
    nats_url=$(IFS=,; echo "${clients[*]}")
    {
        echo "NATS_URL=$nats_url"
        for i in 0 1 2; do
            echo "NATS_${i}_URL=${clients[i]}"
            echo "NATS_${i}_MONITOR_PORT=${monitors[i]}"
        done
    } >>"$state/cluster.env"
    # /healthz without `js-enabled-only` answers 200 only once JetStream on that node is
    # current with an elected meta leader, that is, once the cluster has formed.
    for i in 0 1 2; do
        wait_for "$ready_within" http_ok "${monitors[i]}" /healthz \
            || die "nats-$i did not become healthy within ${ready_within}s; see $state/logs/nats-$i.log"
    done
    say "NATS cluster formed: $nats_url"
}

start_postgres() {
    if [[ -n ${DATABASE_URL:-} ]]; then
        database_url=$DATABASE_URL
        echo "DATABASE_URL=$database_url" >>"$state/cluster.env"
        say "PostgreSQL: using DATABASE_URL"
        return
    fi
    local pg_bin pg_root port as_postgres=()
    export PATH="$PATH:/usr/sbin:/sbin"
    pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n1)
    [[ -n $pg_bin ]] || pg_bin=$(dirname "$(command -v initdb)") \
        || die "PostgreSQL is not installed (no initdb); run scripts/setup.sh or set DATABASE_URL"
    # In a temp dir of its own rather than the state dir: when we are root the server runs as
    # `postgres`, which must be able to reach its directory through every parent.
    pg_root=$(mktemp -d -t sy-cluster-postgres-XXXXXX)
    echo "PG_ROOT=$pg_root" >>"$state/cluster.env"
    echo "PG_BIN=$pg_bin" >>"$state/cluster.env"
    mkdir "$pg_root/socket"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$pg_root"
        as_postgres=(runuser -u postgres --)
    fi
    (cd "$pg_root" && "${as_postgres[@]}" "$pg_bin/initdb" -D data -U postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync) >"$state/logs/initdb.log" 2>&1 \
        || die "initdb failed; see $state/logs/initdb.log"
    # PostgreSQL cannot pick its own port: try free ones until one binds.
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        if (cd "$pg_root" && "${as_postgres[@]}" "$pg_bin/pg_ctl" -D data -l postgres.log -w -t 60 \
            -o "-p $port -h 127.0.0.1 -k $pg_root/socket -c max_connections=300" start) \
            >/dev/null 2>&1; then
            database_url="postgres://postgres@127.0.0.1:$port/postgres"
            echo "DATABASE_URL=$database_url" >>"$state/cluster.env"
            say "PostgreSQL on port $port"
            return
        fi
    done
    die "PostgreSQL did not start; see $pg_root/postgres.log"
}

bootstrap() {
    (umask 077 && head -c 32 /dev/urandom | base64 >"$state/master.key")
    # Migrates the schema before the engines start (so they do not race to), and makes the
    # `default` workspace's first admin.
    (umask 077 && "$bin" admin bootstrap --database-url "$database_url" \
        >"$state/admin-token" 2>>"$state/logs/bootstrap.log") \
        || die "admin bootstrap failed; see $state/logs/bootstrap.log"
    echo "ADMIN_TOKEN_FILE=$state/admin-token" >>"$state/cluster.env"
    echo "MASTER_KEY_FILE=$state/master.key" >>"$state/cluster.env"
}

# The address an engine logged once listening (`engine listening addr=127.0.0.1:PORT`).
engine_addr() {
    sed -n 's/.*engine listening.*addr=\([0-9.:]*\).*/\1/p' "$state/logs/$1.log" 2>/dev/null | tail -n1
}

engine_ready() {
    local addr
    addr=$(engine_addr "$1")
    [[ -n $addr ]] && http_ok "${addr##*:}" /readyz
}

start_engines() {
    local i urls=() addr
    # One after the other: two engines declaring the same three-replica streams at the same
    # moment were seen to have one declaration time out (`jetstream request timed out`) and
    # that engine exit; once the streams exist, engines start in any order.
    for i in 1 2; do
        # Port 0: the engine takes a free port and logs it, so two never clash.
        spawn "engine-$i" env NATS_URL="$nats_url" DATABASE_URL="$database_url" \
            SWITCHYARD_MASTER_KEY_FILE="$state/master.key" SWITCHYARD_STREAM_REPLICAS=3 \
            SWITCHYARD_LOG_FORMAT=text RUST_LOG="${RUST_LOG:-info}" \
            "$bin" engine --listen 127.0.0.1:0
        wait_for "$ready_within" alive_and engine_ready "engine-$i" \
            || die "engine-$i did not become ready within ${ready_within}s; see $state/logs/engine-$i.log"
        running "engine-$i" || die "engine-$i exited; see $state/logs/engine-$i.log"
        addr=$(engine_addr "engine-$i")
        urls+=("http://$addr")
        echo "ENGINE_${i}_URL=http://$addr" >>"$state/cluster.env"
    done
    {
        echo "ENGINE_URLS=$(IFS=,; echo "${urls[*]}")"
        echo "SWITCHYARD_URL=${urls[0]}"
    } >>"$state/cluster.env"
}

worker_ready() { grep -q "pulling steps" "$state/logs/$1.log" 2>/dev/null; }

# Starts worker-N, N one more than the highest so far, and waits until it pulls.
add_worker() {
    local n name
    n=$(($(cat "$state/worker-seq" 2>/dev/null || echo 0) + 1))
    echo "$n" >"$state/worker-seq"
    name="worker-$n"
    spawn "$name" env NATS_URL="$nats_url" DATABASE_URL="$database_url" \
        SWITCHYARD_MASTER_KEY_FILE="$state/master.key" \
        SWITCHYARD_LOG_FORMAT=text RUST_LOG="${RUST_LOG:-info}" \
        "$bin" worker --worker-id "$name"
    wait_for "$ready_within" alive_and worker_ready "$name" \
        || die "$name did not start pulling within ${ready_within}s; see $state/logs/$name.log"
    running "$name" || die "$name exited; see $state/logs/$name.log"
    echo "$name"
}

watch_parent() {
    local parent=${SWITCHYARD_CLUSTER_WATCH_PID:-}
    [[ -n $parent ]] || return 0
    # Detached from our output, so a caller reading it is not held open by the watcher.
    (
        while kill -0 "$parent" 2>/dev/null && [[ -d $state ]]; do sleep 1; done
        [[ -d $state ]] && SWITCHYARD_CLUSTER_DIR=$state "$root/deploy/local/cluster.sh" down
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$state/watcher.pid"
}

# --- verbs -----------------------------------------------------------------------------------

up() {
    if [[ -f $state/cluster.env ]]; then
        die "a cluster is already up in $state (cluster.sh down first)"
    fi
    mkdir -p "$state/pids" "$state/logs"
    : >"$state/cluster.env"
    echo "SWITCHYARD_CLUSTER_DIR=$state" >>"$state/cluster.env"
    # Whatever fails from here on, nothing is left running.
    trap 'status=$?; ((status == 0)) || { say "start-up failed; stopping what started"; dump_logs; down_all; }' EXIT
    find_binary
    echo "SWITCHYARD_BIN=$bin" >>"$state/cluster.env"
    find_nats
    watch_parent
    start_nats
    start_postgres
    bootstrap
    start_engines
    local i
    for ((i = 0; i < ${SWITCHYARD_CLUSTER_WORKERS:-3}; i++)); do
        add_worker >/dev/null
    done
    trap - EXIT
    say "up: engines $(env_value ENGINE_URLS)"
    say "admin token in $state/admin-token (export SWITCHYARD_TOKEN=\$(cat $state/admin-token))"
    say "settings in $state/cluster.env; stop with: $0 down"
    # The engine URLs alone on standard output, for scripts.
    env_value ENGINE_URLS
}

status() {
    [[ -f $state/cluster.env ]] || { say "no cluster in $state"; return 1; }
    local file name
    for file in "$state"/pids/*.pid; do
        [[ -e $file ]] || continue
        name=$(basename "$file" .pid)
        if running "$name"; then
            printf '%-10s %8s  running\n' "$name" "$(pid_of "$name")"
        else
            printf '%-10s %8s  not running\n' "$name" "$(pid_of "$name")"
        fi
    done
    printf 'engines: %s\nNATS: %s\n' "$(env_value ENGINE_URLS)" "$(env_value NATS_URL)"
}

# The end of every log, for diagnosing a start-up that failed (the state, logs included, is
# removed afterwards).
dump_logs() {
    local log
    for log in "$state"/logs/*.log; do
        [[ -e $log ]] || continue
        printf '\n--- %s (last 20 lines)\n' "$(basename "$log")" >&2
        tail -n 20 "$log" >&2
    done
}

# Stops every process in the reverse order of start: workers drain first, then engines, then
# NATS and PostgreSQL; then removes the state.
down_all() {
    local file name pg_root pg_bin as_postgres=()
    for file in "$state"/pids/worker-*.pid; do
        [[ -e $file ]] || continue
        name=$(basename "$file" .pid)
        # All at once: each drains on its own.
        if running "$name"; then
            kill -TERM "$(pid_of "$name")" 2>/dev/null || true
        fi
    done
    for file in "$state"/pids/worker-*.pid "$state"/pids/engine-*.pid "$state"/pids/nats-*.pid; do
        [[ -e $file ]] || continue
        signal_and_wait "$(basename "$file" .pid)" TERM "$worker_stop_within"
    done
    pg_root=$(env_value PG_ROOT)
    if [[ -n $pg_root && -d $pg_root ]]; then
        pg_bin=$(env_value PG_BIN)
        [[ $(id -u) -ne 0 ]] || as_postgres=(runuser -u postgres --)
        (cd "$pg_root" && "${as_postgres[@]}" "$pg_bin/pg_ctl" -D data -m fast stop) >/dev/null 2>&1 || true
        rm -rf "$pg_root"
    fi
    if [[ -f $state/watcher.pid ]]; then
        local watcher
        watcher=$(cat "$state/watcher.pid")
        # Not when `down` is the watcher's own doing.
        [[ $watcher == "$$" || $watcher == "$PPID" ]] || kill "$watcher" 2>/dev/null || true
    fi
    rm -rf "$state"
}

down() {
    [[ -d $state ]] || { say "nothing to stop in $state"; return 0; }
    down_all
    say "down"
}

worker() {
    [[ -f $state/cluster.env ]] || die "no cluster in $state (cluster.sh up first)"
    nats_url=$(env_value NATS_URL)
    database_url=$(env_value DATABASE_URL)
    # The binary the cluster was started with, not whatever the environment says now.
    bin=$(env_value SWITCHYARD_BIN)
    case ${1:-} in
        add) add_worker ;;
        remove)
            local name=${2:-}
            if [[ -z $name ]]; then
                name=$(find "$state/pids" -name 'worker-*.pid' -printf '%f\n' \
                    | sed 's/\.pid$//' | sort -t- -k2 -n | tail -n1)
                [[ -n $name ]] || die "no worker to remove"
            fi
            [[ $name == worker-* ]] || name="worker-$name"
            [[ -f $state/pids/$name.pid ]] || die "no $name"
            # SIGTERM: the worker stops pulling and finishes the steps it holds.
            signal_and_wait "$name" TERM "$worker_stop_within"
            echo "$name"
            ;;
        *) usage ;;
    esac
}

one() {
    local signal=$1 name=${2:-}
    [[ -n $name ]] || usage
    [[ -f $state/pids/$name.pid ]] || die "no process $name in $state"
    running "$name" || die "$name is not running"
    if [[ $signal == KILL ]]; then
        kill -KILL "$(pid_of "$name")"
        rm -f "$state/pids/$name.pid"
    else
        signal_and_wait "$name" "$signal" "$worker_stop_within"
    fi
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    worker) worker "${@:2}" ;;
    stop) one TERM "${2:-}" ;;
    kill) one KILL "${2:-}" ;;
    *) usage ;;
esac
