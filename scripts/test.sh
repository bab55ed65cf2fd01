#!/usr/bin/env bash
# The project's test command: runs every test against a real Ollama.
#
# Usage: scripts/test.sh [go test flags...]     e.g. scripts/test.sh -run TestChat -v
#
# Starts (or reuses) the test Ollama server (scripts/ollama-test-server.sh),
# exports its URL and model (TOLLGATE_TEST_OLLAMA_URL, TOLLGATE_TEST_OLLAMA_MODEL)
# and TOLLGATE_REQUIRE_OLLAMA=1 so integration tests fail instead of skipping,
# starts (or reuses) PostgreSQL and Redis (scripts/test-services.sh), exports
# TOLLGATE_TEST_POSTGRES_URL, TOLLGATE_TEST_REDIS_URL and TOLLGATE_REQUIRE_SERVICES=1
# (and TOLLGATE_REQUIRE_BROWSER=1 when chromium is installed, for the
# dashboard's browser tests), installs stripe-mock (Stripe's mock API, for
# the usage export's tests) when missing and sets TOLLGATE_REQUIRE_STRIPE=1,
# then runs `go test -race -count=1 ./... "$@"`.
# A server this script started is stopped when it exits, unless another
# scripts/test.sh run is still using it; the same goes for the PostgreSQL and
# Redis it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SERVER=scripts/ollama-test-server.sh
STATE=${TOLLGATE_OLLAMA_STATE_DIR:-$ROOT/.ollama-test}
SERVICES=scripts/test-services.sh
SVC_STATE=${TOLLGATE_SERVICES_STATE_DIR:-$ROOT/.test-services}
LEASES=$STATE/leases

# Leases let concurrent runs share one server: the last run to leave stops a
# server that some scripts/test.sh started (not one started by hand or by CI).
mkdir -p "$LEASES"
touch "$LEASES/$$"

cleanup() {
	rm -f "$LEASES/$$"
	local f other=0
	for f in "$LEASES"/*; do
		[[ -e $f ]] || continue
		if kill -0 "${f##*/}" 2>/dev/null; then
			other=1
		else
			rm -f "$f" # stale lease of a run that died
		fi
	done
	if ((other == 0)) && [[ -e $STATE/started-by-test-sh ]]; then
		rm -f "$STATE/started-by-test-sh"
		"$SERVER" stop || true
	fi
	if ((other == 0)) && [[ -e $SVC_STATE/started-by-test-sh ]]; then
		rm -f "$SVC_STATE/started-by-test-sh"
		"$SERVICES" stop || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

result=$("$SERVER" start) || {
	echo "scripts/test.sh: could not start the test Ollama server (see above)" >&2
	exit 1
}
if [[ $result == started ]]; then
	touch "$STATE/started-by-test-sh"
fi

# shellcheck source=/dev/null
source "$STATE/env"
export TOLLGATE_REQUIRE_OLLAMA=1
# With Debian's chromium installed (.ci/run installs it), the dashboard's
# browser tests must run: fail rather than skip if it cannot start.
if command -v chromium >/dev/null; then
	export TOLLGATE_REQUIRE_BROWSER=1
fi
echo "scripts/test.sh: real Ollama at $TOLLGATE_TEST_OLLAMA_URL, model $TOLLGATE_TEST_OLLAMA_MODEL" >&2

result=$("$SERVICES" start) || {
	echo "scripts/test.sh: could not start the test PostgreSQL and Redis (see above)" >&2
	exit 1
}
if [[ $result == started ]]; then
	touch "$SVC_STATE/started-by-test-sh"
fi
# shellcheck source=/dev/null
source "$SVC_STATE/env"
export TOLLGATE_REQUIRE_SERVICES=1
echo "scripts/test.sh: PostgreSQL at ${TOLLGATE_TEST_POSTGRES_URL%%\?*}, Redis at $TOLLGATE_TEST_REDIS_URL" >&2

# Stripe's mock API server, for the usage export's tests (each test starts
# its own on a free port). Installed from its Go module when missing.
STRIPE_MOCK_VERSION=v0.203.0
if ! command -v stripe-mock >/dev/null; then
	echo "scripts/test.sh: installing stripe-mock $STRIPE_MOCK_VERSION" >&2
	go install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION"
fi
export TOLLGATE_TEST_STRIPE_MOCK_BIN=${TOLLGATE_TEST_STRIPE_MOCK_BIN:-$(command -v stripe-mock)}
export TOLLGATE_REQUIRE_STRIPE=1
echo "scripts/test.sh: stripe-mock at $TOLLGATE_TEST_STRIPE_MOCK_BIN" >&2

go test -race -count=1 ./... "$@"
