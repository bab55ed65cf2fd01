#!/usr/bin/env bash
# Load benchmark: Tollgate in front of a fake Ollama that answers at once,
# against the same fake called directly, at constant request rates with
# vegeta. Reports p50/p99 latency of each, the latency Tollgate adds, CPU per
# request of the tollgate process, its peak RSS, and throughput at saturation.
#
#   bash bench/run.sh                  # defaults below, about 3 minutes
#   ROUNDS=2 DURATION=5s bash bench/run.sh
#
# Knobs (environment): RATES ("500 2000"), DURATION (10s per attack),
# ROUNDS (3; direct and gateway alternate within each), SAT_DURATION (5s),
# SAT_WORKERS (64), OUT (directory for the raw results; default a temp dir).
#
# Everything listens on 127.0.0.1 and is stopped on exit. Keys, limits (a
# high rate limit, so they are checked but never refuse) and durable
# metering are all on. Needs Go, gcc (SQLite), jq; vegeta is installed with
# `go install` when missing.
set -euo pipefail

RATES=${RATES:-"500 2000"}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
SAT_DURATION=${SAT_DURATION:-5s}
SAT_WORKERS=${SAT_WORKERS:-64}

cd "$(dirname "$0")/.."
command -v jq >/dev/null || { echo "bench: jq is required" >&2; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
OUT=${OUT:-$W/results}
mkdir -p "$OUT"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$W/bin" "$W/db"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# vegeta: a constant-rate HTTP load generator, as a tool binary (not a module dependency).
GOBIN=$(go env GOBIN); GOBIN=${GOBIN:-$(go env GOPATH)/bin}
VEGETA=$(command -v vegeta || true)
if [[ -z $VEGETA ]]; then
	if [[ ! -x $GOBIN/vegeta ]]; then
		echo "bench: installing vegeta" >&2
		timeout 300 go install github.com/tsenart/vegeta/v12@latest
	fi
	VEGETA=$GOBIN/vegeta
fi

echo "bench: building" >&2
mkdir -p "$W/bin" "$W/db"
go build -o "$W/bin/tollgate" ./cmd/tollgate
go build -o "$W/bin/fakeollama" ./bench/fakeollama

# wait_line FILE PATTERN: wait (10 s at most) for a line matching PATTERN.
wait_line() {
	for _ in $(seq 100); do
		if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "bench: timed out waiting for '$2' in $1:" >&2
	cat "$1" >&2
	return 1
}

"$W/bin/fakeollama" -lifetime 30m >"$W/fake.out" 2>&1 &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
wait_line "$W/fake.out" '^http://127.0.0.1:'
FAKE=$(head -1 "$W/fake.out")

cat >"$W/models.yaml" <<EOF
backends:
  - url: $FAKE
models:
  chat:
    ollama: llama3.2:3b
    endpoints: [generate]
    price: {input_per_1k: 0.0002, output_per_1k: 0.0006}
EOF
DB=$W/db/tollgate.db
export TOLLGATE_DB=$DB TOLLGATE_MODELS=$W/models.yaml
KEY=$("$W/bin/tollgate" keys create --name bench --scopes generate --rate 100000 --burst 100000 \
	--tokens-per-minute 1000000000000 --max-concurrent 10000 --monthly-tokens 1000000000000000 --json | jq -r .key)

"$W/bin/tollgate" serve --addr 127.0.0.1:0 --log-level info >"$W/tollgate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")
wait_line "$W/tollgate.log" '"tollgate listening"'
TG=http://$(grep -m1 '"tollgate listening"' "$W/tollgate.log" | jq -r .addr)

printf '{"model":"chat","prompt":"Say hi in five words","stream":false}' >"$W/gateway.json"
printf '{"model":"llama3.2:3b","prompt":"Say hi in five words","stream":false}' >"$W/direct.json"
printf 'POST %s/generate\nX-API-Key: %s\nContent-Type: application/json\n@%s\n' "$TG" "$KEY" "$W/gateway.json" >"$W/gateway.targets"
printf 'POST %s/api/generate\nContent-Type: application/json\n@%s\n' "$FAKE" "$W/direct.json" >"$W/direct.targets"

# Both answer before the attacks start (and warm the key cache and connections).
for t in gateway direct; do
	"$VEGETA" attack -targets "$W/$t.targets" -rate 200/s -duration 1s | "$VEGETA" report -type json >"$OUT/warm-$t.json"
	if [[ $(jq .success "$OUT/warm-$t.json") != 1 ]]; then
		echo "bench: $t warm-up failed:" >&2; jq -c .status_codes,.errors "$OUT/warm-$t.json" >&2; exit 1
	fi
done

TICK=$(getconf CLK_TCK)
# cpu_ticks PID: user+system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# attack NAME TARGET RATE [extra vegeta flags]: one attack; prints a summary line.
attack() {
	local name=$1 target=$2 rate=$3; shift 3
	local pid=$TG_PID
	[[ $target == direct ]] && pid=$FAKE_PID
	local c0 c1
	c0=$(cpu_ticks "$pid")
	"$VEGETA" attack -targets "$W/$target.targets" -rate "$rate" "$@" -timeout 10s \
		| "$VEGETA" report -type json >"$OUT/$name.json"
	c1=$(cpu_ticks "$pid")
	jq -c --arg name "$name" --arg target "$target" --argjson ticks $((c1 - c0)) --argjson hz "$TICK" '{
		name: $name, target: $target, requests: .requests, success: .success, rate: .rate, throughput: .throughput,
		p50_us: (.latencies["50th"] / 1000), p99_us: (.latencies["99th"] / 1000), max_us: (.latencies.max / 1000),
		cpu_us_per_req: ($ticks / $hz * 1e6 / .requests), status: .status_codes}' "$OUT/$name.json" | tee -a "$OUT/summary.jsonl"
}

: >"$OUT/summary.jsonl"
echo "bench: constant rate: $RATES req/s, $DURATION each, $ROUNDS rounds, direct and gateway interleaved" >&2
for rate in $RATES; do
	for r in $(seq "$ROUNDS"); do
		attack "rate$rate-r$r-direct" direct "$rate/s" -duration "$DURATION"
		attack "rate$rate-r$r-gateway" gateway "$rate/s" -duration "$DURATION"
	done
done
echo "bench: saturation: $SAT_WORKERS workers as fast as they can, $SAT_DURATION each" >&2
for r in 1 2; do
	attack "sat-r$r-direct" direct 0 -duration "$SAT_DURATION" -max-workers "$SAT_WORKERS" -workers "$SAT_WORKERS"
	attack "sat-r$r-gateway" gateway 0 -duration "$SAT_DURATION" -max-workers "$SAT_WORKERS" -workers "$SAT_WORKERS"
done

HWM=$(awk '/VmHWM/ {print $2}' "/proc/$TG_PID/status")
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$TG_PID/status")
ROWS=$(timeout 10 "$W/bin/tollgate" usage summary | awk '$2 ~ /^[0-9]+$/ {s += $2} END {print s + 0}')
OK200=$(jq -s '[.[] | select(.target == "gateway") | .status["200"] // 0] | add' "$OUT/summary.jsonl")

# Summary: per rate, the median over rounds of each figure; added = gateway - direct.
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(go version | cut -d' ' -f3)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
jq -s -r --arg hwm "$HWM" --arg rss "$RSS" '
	def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
	def r: . * 10 | round / 10;
	(map(select(.name | startswith("rate"))) | group_by(.name | capture("rate(?<r>[0-9]+)").r | tonumber) | map(
		(.[0].name | capture("rate(?<r>[0-9]+)").r) as $rate |
		(map(select(.target == "direct"))) as $d | (map(select(.target == "gateway"))) as $g |
		"\($rate) req/s (median of \($g | length) rounds; each round: p50/p99 us)\n" +
		"  direct : p50 \($d | map(.p50_us) | median | r) us  p99 \($d | map(.p99_us) | median | r) us   [\($d | map("\(.p50_us | r)/\(.p99_us | r)") | join(", "))]\n" +
		"  gateway: p50 \($g | map(.p50_us) | median | r) us  p99 \($g | map(.p99_us) | median | r) us   [\($g | map("\(.p50_us | r)/\(.p99_us | r)") | join(", "))]\n" +
		"  added  : p50 \(($g | map(.p50_us) | median) - ($d | map(.p50_us) | median) | r) us  p99 \(($g | map(.p99_us) | median) - ($d | map(.p99_us) | median) | r) us\n" +
		"  success: direct \($d | map(.success) | min), gateway \($g | map(.success) | min)\n" +
		"  CPU per request: tollgate \($g | map(.cpu_us_per_req) | median | r) us (gateway rounds), fake \($d | map(.cpu_us_per_req) | median | r) us (direct rounds)"
	) | join("\n")),
	(map(select(.name | startswith("sat"))) as $s |
		"saturation (" + ($s[0].name // "") + "...): " +
		"direct \($s | map(select(.target == "direct") | .throughput) | max | round) req/s, " +
		"gateway \($s | map(select(.target == "gateway") | .throughput) | max | round) req/s " +
		"(gateway success \($s | map(select(.target == "gateway") | .success) | min), p99 \($s | map(select(.target == "gateway") | .p99_us) | median | r) us, CPU \($s | map(select(.target == "gateway") | .cpu_us_per_req) | median | r) us/req)"),
	"tollgate peak RSS (VmHWM): \($hwm | tonumber / 1024 | r) MiB, RSS at the end: \($rss | tonumber / 1024 | r) MiB"
' "$OUT/summary.jsonl"
echo "usage rows committed: $ROWS for $OK200 gateway answers with status 200 in the measured attacks (+ warm-up)"
echo "raw results: $OUT"
