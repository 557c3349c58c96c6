#!/usr/bin/env bash
# Sets up the machine, builds the `switchyard` binary and validates the example workflows.
# It becomes `switchyard dev` (local nats-server, SQLite, engine and workers in one process
# tree) once the engine exists.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "==> building switchyard"
cargo build --locked -p engine --bin switchyard

echo "==> validating examples/"
./target/debug/switchyard validate examples/*.yaml examples/*.json

echo
echo "==> a broken definition, to show what problems look like:"
./target/debug/switchyard validate examples/invalid/many-problems.yaml || true
