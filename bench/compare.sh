#!/usr/bin/env bash
# Tollgate against its peers, side by side on this machine: the fake Ollama
# called directly, a bare Go reverse proxy (bench/bareproxy: no keys, no
# limits, no metering), nginx (Debian's nginx-light with a static key map and
# limit_req: an API key check and a rate limit, nothing metered) and Tollgate
# (keys, limits, durable metering through the usage journal, access log).
# Interleaved rounds at constant rates with vegeta, then saturation, then many
# slow streams held open at once.
#
#   bash bench/compare.sh                       # about 6 minutes
#   ROUNDS=1 DURATION=5s STREAMS=2000 bash bench/compare.sh
#
# Prints, per rate, each target's p50/p99 and the latency it adds over the
# direct call (its percentile minus direct's, same rounds), its CPU per
# request (the proxy process only), and the ratios Tollgate/bare proxy and
# Tollgate/nginx; at saturation, throughput and CPU per request; for the
# streams, Tollgate's peak RSS and the time to first token it adds.
#
# Knobs: RATES ("300 1000"), DURATION (10s), ROUNDS (3), SAT_DURATION (5s),
# SAT_WORKERS (64), STREAMS (10000), STREAM_DELAY (3s between chunks),
# STREAM_RAMP (10s to open them all), OUT (raw results; default a temp dir).
# Needs Go, gcc, jq, openssl; installs nginx-light (apt-get) and vegeta (go
# install) when missing. Everything listens on 127.0.0.1 and stops on exit.
set -euo pipefail

RATES=${RATES:-"300 1000"}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
SAT_DURATION=${SAT_DURATION:-5s}
SAT_WORKERS=${SAT_WORKERS:-64}
STREAMS=${STREAMS:-10000}
STREAM_DELAY=${STREAM_DELAY:-3s}
STREAM_RAMP=${STREAM_RAMP:-10s}

cd "$(dirname "$0")/.."
for c in jq openssl; do command -v $c >/dev/null || { echo "bench: $c is required" >&2; exit 1; }; done
NGINX=$(command -v nginx || true)
if [[ -z $NGINX ]]; then
	echo "bench: installing nginx-light" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
	NGINX=$(command -v nginx)
fi
GOBIN=$(go env GOBIN); GOBIN=${GOBIN:-$(go env GOPATH)/bin}
VEGETA=$(command -v vegeta || true)
if [[ -z $VEGETA ]]; then
	[[ -x $GOBIN/vegeta ]] || { echo "bench: installing vegeta" >&2; timeout 300 go install github.com/tsenart/vegeta/v12@latest; }
	VEGETA=$GOBIN/vegeta
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-compare.XXXXXX")
OUT=${OUT:-$W/results}
mkdir -p "$OUT" "$W/bin" "$W/db" "$W/nginx"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$W/bin" "$W/db"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: building" >&2
go build -o "$W/bin/tollgate" ./cmd/tollgate
go build -o "$W/bin/fakeollama" ./bench/fakeollama
go build -o "$W/bin/bareproxy" ./bench/bareproxy
go build -o "$W/bin/streams" ./bench/streams

wait_line() { # FILE PATTERN: wait (10 s at most) for a line matching PATTERN
	for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "bench: timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
TICK=$(getconf CLK_TCK)
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

# --- the fake Ollama, the bare proxy, nginx, Tollgate -------------------------
"$W/bin/fakeollama" -lifetime 60m >"$W/fake.out" 2>&1 &
FAKE_PID=$!; PIDS+=("$FAKE_PID")
wait_line "$W/fake.out" '^http://127.0.0.1:'
FAKE=$(head -1 "$W/fake.out")

"$W/bin/bareproxy" -upstream "$FAKE" -lifetime 60m >"$W/bare.out" 2>&1 &
BARE_PID=$!; PIDS+=("$BARE_PID")
wait_line "$W/bare.out" '^http://127.0.0.1:'
BARE=$(head -1 "$W/bare.out")

cat >"$W/models.yaml" <<YAML
backends:
  - url: $FAKE
    max_parallel: 256
models:
  chat:
    ollama: llama3.2:3b
    endpoints: [generate]
    price: {input_per_1k: 0.0002, output_per_1k: 0.0006}
YAML
export TOLLGATE_DB=$W/db/tollgate.db TOLLGATE_MODELS=$W/models.yaml
KEY=$("$W/bin/tollgate" keys create --name bench --scopes generate --rate 100000 --burst 100000 \
	--tokens-per-minute 1000000000000 --max-concurrent 20000 --monthly-tokens 1000000000000000 --json 2>/dev/null | jq -r .key)
"$W/bin/tollgate" serve --addr 127.0.0.1:0 --log-level info >"$W/tollgate.log" 2>&1 &
TG_PID=$!; PIDS+=("$TG_PID")
wait_line "$W/tollgate.log" '"tollgate listening"'
TG=http://$(grep -m1 '"tollgate listening"' "$W/tollgate.log" | jq -r .addr)

NGINX_PORT=$(free_port)
mkdir -p "$W/nginx/tmp" && chmod 777 "$W/nginx/tmp"
cat >"$W/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log $W/nginx/access.log;
  client_body_temp_path $W/nginx/tmp/body; proxy_temp_path $W/nginx/tmp/proxy;
  fastcgi_temp_path $W/nginx/tmp/fcgi; uwsgi_temp_path $W/nginx/tmp/uwsgi; scgi_temp_path $W/nginx/tmp/scgi;
  map \$http_x_api_key \$key_ok { default 0; "$KEY" 1; }
  limit_req_zone \$http_x_api_key zone=perkey:10m rate=100000r/s;
  upstream ollama { server ${FAKE#http://}; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location = /api/generate {
      if (\$key_ok = 0) { return 401; }
      limit_req zone=perkey burst=100000 nodelay;
      proxy_pass http://ollama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
"$NGINX" -p "$W/nginx" -c "$W/nginx/nginx.conf" -g 'daemon off;' >"$W/nginx/out" 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
NGINX_URL=http://127.0.0.1:$NGINX_PORT
for _ in $(seq 50); do curl -s -o /dev/null "$NGINX_URL/" && break; sleep 0.1; done
nginx_pids() { echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"; }

# --- constant rates and saturation ------------------------------------------
printf '{"model":"chat","prompt":"Say hi in five words","stream":false}' >"$W/tollgate.json"
printf '{"model":"llama3.2:3b","prompt":"Say hi in five words","stream":false}' >"$W/direct.json"
printf 'POST %s/api/generate\nContent-Type: application/json\n@%s\n' "$FAKE" "$W/direct.json" >"$W/direct.targets"
printf 'POST %s/api/generate\nContent-Type: application/json\n@%s\n' "$BARE" "$W/direct.json" >"$W/bare.targets"
printf 'POST %s/api/generate\nX-API-Key: %s\nContent-Type: application/json\n@%s\n' "$NGINX_URL" "$KEY" "$W/direct.json" >"$W/nginx.targets"
printf 'POST %s/generate\nX-API-Key: %s\nContent-Type: application/json\n@%s\n' "$TG" "$KEY" "$W/tollgate.json" >"$W/tollgate.targets"
pids_of() {
	case $1 in direct) echo "$FAKE_PID" ;; bare) echo "$BARE_PID" ;; nginx) nginx_pids ;; tollgate) echo "$TG_PID" ;; esac
}

TARGETS="direct bare nginx tollgate"
for t in $TARGETS; do # warm keys, connections and caches; each must answer
	"$VEGETA" attack -targets "$W/$t.targets" -rate 200/s -duration 1s | "$VEGETA" report -type json >"$OUT/warm-$t.json"
	[[ $(jq .success "$OUT/warm-$t.json") == 1 ]] || { echo "bench: $t warm-up failed:" >&2; jq -c .status_codes,.errors "$OUT/warm-$t.json" >&2; exit 1; }
done

attack() { # NAME TARGET RATE [vegeta flags]
	local name=$1 target=$2 rate=$3; shift 3
	local pids c0 c1
	pids=$(pids_of "$target")
	c0=$(cpu_ticks $pids)
	"$VEGETA" attack -targets "$W/$target.targets" -rate "$rate" "$@" -timeout 10s | "$VEGETA" report -type json >"$OUT/$name.json"
	c1=$(cpu_ticks $pids)
	jq -c --arg name "$name" --arg target "$target" --argjson ticks $((c1 - c0)) --argjson hz "$TICK" '{
		name: $name, target: $target, requests: .requests, success: .success, throughput: .throughput,
		p50_us: (.latencies["50th"] / 1000), p99_us: (.latencies["99th"] / 1000),
		cpu_us_per_req: ($ticks / $hz * 1e6 / .requests), status: .status_codes}' "$OUT/$name.json" >>"$OUT/summary.jsonl"
	echo "bench: $name done" >&2
}
: >"$OUT/summary.jsonl"
echo "bench: $RATES req/s, $DURATION each, $ROUNDS rounds of: $TARGETS" >&2
for rate in $RATES; do
	for r in $(seq "$ROUNDS"); do
		for t in $TARGETS; do attack "rate$rate-r$r-$t" "$t" "$rate/s" -duration "$DURATION"; done
	done
done
echo "bench: saturation, $SAT_WORKERS workers, $SAT_DURATION each" >&2
for r in 1 2; do
	for t in $TARGETS; do attack "sat-r$r-$t" "$t" 0 -duration "$SAT_DURATION" -max-workers "$SAT_WORKERS" -workers "$SAT_WORKERS"; done
done
ROWS=$(timeout 30 "$W/bin/tollgate" usage summary --by model 2>/dev/null | awk '$2 ~ /^[0-9]+$/ {s += $2} END {print s + 0}')
OK200=$(jq -s '[.[] | select(.target == "tollgate") | .status["200"] // 0] | add' "$OUT/summary.jsonl")

# --- many slow streams ---------------------------------------------------------
echo "bench: $STREAMS slow streams (a chunk every $STREAM_DELAY), direct then through Tollgate over HTTP/2" >&2
"$W/bin/fakeollama" -lifetime 60m -chunk-delay "$STREAM_DELAY" >"$W/slowfake.out" 2>&1 &
SLOW_PID=$!; PIDS+=("$SLOW_PID")
wait_line "$W/slowfake.out" '^http://127.0.0.1:'
SLOW=$(head -1 "$W/slowfake.out")
sed -e "s|$FAKE|$SLOW|" -e "s|max_parallel: 256|max_parallel: 20000|" "$W/models.yaml" >"$W/slow.yaml"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/key.pem" -out "$W/cert.pem" \
	-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
# Through Tollgate each stream holds one upstream connection; the client side
# uses HTTP/2 so that both fit in this machine's limit on open files.
TOLLGATE_MODELS=$W/slow.yaml "$W/bin/tollgate" serve --addr 127.0.0.1:0 --log-level warn \
	--tls-cert "$W/cert.pem" --tls-key "$W/key.pem" --queue-per-key 20000 >"$W/tollgate-streams.log" 2>&1 &
TGS_PID=$!; PIDS+=("$TGS_PID")
for _ in $(seq 100); do [[ -n $(ss -Hltnp "( sport > 0 )" 2>/dev/null | grep "pid=$TGS_PID,") ]] && break; sleep 0.1; done
TGS_ADDR=$(ss -Hltnp 2>/dev/null | grep "pid=$TGS_PID," | awk '{print $4}' | head -1)
RSS0=$(awk '/VmRSS/ {print $2}' "/proc/$TGS_PID/status")
"$W/bin/streams" -n "$STREAMS" -ramp "$STREAM_RAMP" -url "$SLOW/api/generate" \
	-body '{"model":"llama3.2:3b","prompt":"hi","stream":true}' >"$OUT/streams-direct.json" || true
"$W/bin/streams" -n "$STREAMS" -ramp "$STREAM_RAMP" -url "https://$TGS_ADDR/generate" -key "$KEY" \
	-body '{"model":"chat","prompt":"hi","stream":true}' >"$OUT/streams-tollgate.json" || true
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$TGS_PID/status")

# --- summary --------------------------------------------------------------------
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(go version | cut -d' ' -f3), $("$NGINX" -v 2>&1 | cut -d/ -f2)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
jq -s -r '
	def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
	def r: if . == null then null else . * 10 | round / 10 end;
	def r2: if . == null then null else . * 100 | round / 100 end;
	def med(f): map(f) | median;
	def of(t): map(select(.target == t));
	(map(select(.name | startswith("rate"))) | group_by(.name | capture("rate(?<r>[0-9]+)").r | tonumber) | map(
		(.[0].name | capture("rate(?<r>[0-9]+)").r) as $rate | . as $all |
		(of("direct") | med(.p50_us)) as $d50 | (of("direct") | med(.p99_us)) as $d99 |
		([ "direct", "bare", "nginx", "tollgate" ] | map(. as $t | $all | of($t) |
			{t: $t, p50: med(.p50_us), p99: med(.p99_us), cpu: med(.cpu_us_per_req), ok: (map(.success) | min),
			 rounds: (map("\(.p50_us | r)/\(.p99_us | r)") | join(", "))} |
			.a50 = (.p50 - $d50) | .a99 = (.p99 - $d99))) as $rows |
		($rows | map({(.t): .}) | add) as $by |
		"\($rate) req/s (medians of rounds; us)\n" +
		($rows | map("  \(.t | .+"         " | .[0:9]) p50 \(.p50 | r)  p99 \(.p99 | r)  added p50 \(.a50 | r)  p99 \(.a99 | r)  CPU/req \(.cpu | r)  success \(.ok)  [\(.rounds)]") | join("\n")) +
		"\n  ratios  Tollgate/bare: added p50 \(($by.tollgate.a50 / $by.bare.a50) | r2)  added p99 \(($by.tollgate.a99 / $by.bare.a99) | r2)  CPU \(($by.tollgate.cpu / $by.bare.cpu) | r2)" +
		"\n          Tollgate/nginx: added p50 \(($by.tollgate.a50 / $by.nginx.a50) | r2)  added p99 \(($by.tollgate.a99 / $by.nginx.a99) | r2)  CPU \(($by.tollgate.cpu / $by.nginx.cpu) | r2)"
	) | join("\n")),
	(map(select(.name | startswith("sat"))) as $s |
		([ "direct", "bare", "nginx", "tollgate" ] | map(. as $t | $s | of($t) | {t: $t, thr: (map(.throughput) | max), cpu: med(.cpu_us_per_req), ok: (map(.success) | min)})) as $rows |
		($rows | map({(.t): .}) | add) as $by |
		"saturation (\($s | length / 4) rounds, best throughput, median CPU per request)\n" +
		($rows | map("  \(.t | .+"         " | .[0:9]) \(.thr | round) req/s  CPU/req \(.cpu | r) us  success \(.ok)") | join("\n")) +
		"\n  ratios  Tollgate/bare: throughput \(($by.tollgate.thr / $by.bare.thr) | r2)  CPU \(($by.tollgate.cpu / $by.bare.cpu) | r2);  Tollgate/nginx: throughput \(($by.tollgate.thr / $by.nginx.thr) | r2)  CPU \(($by.tollgate.cpu / $by.nginx.cpu) | r2)")
' "$OUT/summary.jsonl"
echo "usage rows: $ROWS for $OK200 Tollgate answers with status 200 in the measured attacks (+ warm-up)"
jq -r -s --arg hwm "$HWM" --arg rss0 "$RSS0" '
	(.[0]) as $d | (.[1]) as $g |
	"streams: \($g.n) at once, a chunk every '"$STREAM_DELAY"': direct ok \($d.ok)/\($d.n), TTFT p50 \($d.ttft_p50_us) us p99 \($d.ttft_p99_us) us; " +
	"Tollgate ok \($g.ok)/\($g.n), TTFT p50 \($g.ttft_p50_us) us p99 \($g.ttft_p99_us) us, added TTFT p50 \($g.ttft_p50_us - $d.ttft_p50_us) us; " +
	"Tollgate RSS \($rss0 | tonumber / 1024 | round) MiB idle, peak \($hwm | tonumber / 1024 | round) MiB" +
	(if $g.first_error != "" then " (first error: \($g.first_error))" else "" end)
' "$OUT/streams-direct.json" "$OUT/streams-tollgate.json"
echo "raw results: $OUT"
