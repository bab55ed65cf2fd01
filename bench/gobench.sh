#!/usr/bin/env bash
# The hot path's Go benchmarks, with allocations: key verification, the
# per-key limiter, the gateway's own cost per call, metering (the usage journal's write; group commit
# into SQLite, which the journal's loader and --usage-journal off use), request
# decode/encode and the whole /generate chain against the fake Ollama.
#
#   bash bench/gobench.sh              # COUNT=1 BENCHTIME=1s
#   COUNT=3 bash bench/gobench.sh      # three runs each, to see the spread
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-1}
BENCHTIME=${BENCHTIME:-1s}
run() { go test -run '^$' -count "$COUNT" -benchtime "$BENCHTIME" -benchmem -timeout 10m "$@" | grep -E '^(Benchmark|ok|FAIL|---)'; }
run -bench 'VerifyCache' ./auth
run -bench 'Limiter' ./limits
run -bench 'Gateway' ./gateway
run -bench 'Recorder|Journal' ./metering
run -bench 'Recorder|InsertEvents|VerifyMissSQLite' ./storage/sqlite
run -bench 'DecodeGenerate|EncodeGenerate|Chain' ./handlers
