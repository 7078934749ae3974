#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run): lint, types, then every test against a real Kafka
# broker (tests/conftest.py starts one, or uses CHRONIK_BOOTSTRAP_SERVERS). Lint and type
# failures are reported but the tests still run; the exit code is pytest's, or 1 when only
# the static checks failed. "No tests collected" (pytest exit 5) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh || exit 1

static=0
echo "== ruff check"; .venv/bin/ruff check . || static=1
echo "== ruff format --check"; .venv/bin/ruff format --check . || static=1
echo "== mypy --strict"; .venv/bin/mypy || static=1

echo "== pytest"
.venv/bin/pytest tests/ "$@"
rc=$?
if (( rc == 5 )); then
    echo "pytest collected no tests: failing" >&2
    exit 5
fi
if (( rc == 0 && static != 0 )); then
    echo "tests passed, but ruff or mypy failed (see above)" >&2
    exit 1
fi
exit "$rc"
