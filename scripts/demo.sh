#!/usr/bin/env bash
# The demo, from nothing: set up .venv, start a real Kafka broker (or use
# CHRONIK_BOOTSTRAP_SERVERS), then run examples/demo.py. The broker keeps running afterwards;
# stop it with `.venv/bin/chronik kafka down`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
if [[ -z "${CHRONIK_BOOTSTRAP_SERVERS:-}" ]]; then
    .venv/bin/chronik kafka up
fi
.venv/bin/chronik kafka check

if [[ -f examples/demo.py ]]; then
    exec .venv/bin/python -m examples.demo "$@"
fi
echo "examples/demo.py does not exist yet; the broker:"
.venv/bin/chronik kafka status
