#!/usr/bin/env bash
# Idempotent setup of a development machine: .venv with Python 3.11+, the project installed
# editable with its dev tools, and a check that Java 17+ and Maven are there to provision the
# local Kafka broker. Re-running it is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[bootstrap] %s\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$(find_python) || { say "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)"; exit 1; }
    say "creating .venv with $python"
    rm -rf .venv
    "$python" -m venv .venv
fi

stamp=.venv/.chronik-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$wanted" ]] || ! .venv/bin/python -c 'import workers.cli' 2>/dev/null; then
    say "installing the project and its dev tools into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    echo "$wanted" > "$stamp"
fi

# Java and Maven are needed only for the self-provisioned broker.
if [[ -n "${CHRONIK_BOOTSTRAP_SERVERS:-}" ]]; then
    say "using the Kafka at CHRONIK_BOOTSTRAP_SERVERS=$CHRONIK_BOOTSTRAP_SERVERS"
else
    command -v java >/dev/null 2>&1 || { say "java not found: Kafka 4.1 needs Java 17+ (or set CHRONIK_BOOTSTRAP_SERVERS)"; exit 1; }
    java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [[ -z "$java_major" ]] || (( ${java_major%%.*} < 17 )); then
        say "Java ${java_major:-?} found: Kafka 4.1 needs Java 17+"; exit 1
    fi
    command -v mvn >/dev/null 2>&1 || { say "mvn not found: Maven resolves the Kafka jars (or set CHRONIK_BOOTSTRAP_SERVERS)"; exit 1; }
fi
say "ready"
