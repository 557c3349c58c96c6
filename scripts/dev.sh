#!/usr/bin/env bash
# The main job, one command: sets the machine up, builds `switchyard`, starts `switchyard dev`
# (a managed nats-server, SQLite under .switchyard/, the engine API on 127.0.0.1:8080 and
# workers) with the example workflows loaded, runs the `hello` example to completion, then
# keeps everything running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export PATH="$PATH:/usr/sbin:/sbin"

echo "==> building switchyard"
cargo build --locked -p engine --bin switchyard
bin=${CARGO_TARGET_DIR:-./target}/debug/switchyard

echo "==> validating examples/"
"$bin" validate examples/*.yaml examples/*.json examples/local/*.yaml

addr=${SWITCHYARD_ADDR:-127.0.0.1:8080}
export SWITCHYARD_URL="http://$addr"
echo "==> starting switchyard dev on $addr"
"$bin" dev --addr "$addr" --data-dir .switchyard --apply examples/local &
dev_pid=$!
trap 'kill -TERM $dev_pid 2>/dev/null; wait $dev_pid 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 100); do
    "$bin" runs list --limit 1 >/dev/null 2>&1 && break
    kill -0 $dev_pid 2>/dev/null || { echo "switchyard dev exited" >&2; exit 1; }
    sleep 0.2
done

echo "==> switchyard run hello --wait"
"$bin" run hello --input "{\"api\": \"$SWITCHYARD_URL\"}" --wait

echo
echo "switchyard dev is running on $SWITCHYARD_URL; try:"
echo "  $bin runs list"
echo "  $bin run hello --wait"
echo "  examples/local/signup.yaml: start a run with a signed webhook (the commands are at its top)"
echo "  $bin emit user.signed_up --data '{\"email\": \"grace@example.com\"}'"
echo "Ctrl-C stops it."
wait $dev_pid
