#!/usr/bin/env bash
# Runs a real Ollama (v0.10.1) serving the tiny test model, for integration tests.
#
# Usage: scripts/ollama-test-server.sh start|stop|env|status
#
#   start   Make sure a healthy server from the state dir is running (reuse it,
#           or install Ollama if needed and start a new one on a free loopback
#           port), (re)create the model "tiny" from a freshly written GGUF, load
#           it, and write the env file. Prints "started" or "reused" on stdout;
#           progress goes to stderr.
#   stop    Stop the server started from the state dir (and its runner).
#   env     Print the env file (export lines) of the running server:
#             eval "$(scripts/ollama-test-server.sh env)"
#   status  Exit 0 and print the URL if the server is running and healthy.
#
# State (binary if it had to be built elsewhere, models, logs, env file) lives in
# $TOLLGATE_OLLAMA_STATE_DIR, by default .ollama-test/ at the repo root:
#   env         export TOLLGATE_TEST_OLLAMA_URL=... / TOLLGATE_TEST_OLLAMA_MODEL=tiny
#               / TOLLGATE_TEST_OLLAMA_BIN=... (for tests that start a second server)
#   serve.log   the Ollama server log (serve.log.1 is the previous run's)
#   build.log   output of `go install` when Ollama had to be built
#
# Environment:
#   OLLAMA_BIN                 use this ollama binary instead of finding/building one
#   TOLLGATE_OLLAMA_STATE_DIR  state dir (default: <repo>/.ollama-test)
#   TOLLGATE_OLLAMA_NUM_PARALLEL  requests served at once by the loaded model (default 4)
set -euo pipefail

OLLAMA_VERSION=v0.10.1
MODEL=tiny

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${TOLLGATE_OLLAMA_STATE_DIR:-$ROOT/.ollama-test}
LOG=$STATE/serve.log
PIDFILE=$STATE/serve.pid
URLFILE=$STATE/url
ENVFILE=$STATE/env

log() { echo "ollama-test-server: $*" >&2; }

# die REASON [LOGFILE]: fail loudly with the reason and the tail of a log.
die() {
	local f=${2:-$LOG}
	{
		echo
		echo "ollama-test-server: ERROR: $1"
		if [[ -s $f ]]; then
			echo "---- last 40 lines of $f ----"
			tail -n 40 "$f"
			echo "---- end of $f ----"
		fi
	} >&2
	exit 1
}

# ---------------------------------------------------------------- ollama binary

# is_pinned BIN: BIN is a Go binary built from github.com/ollama/ollama at OLLAMA_VERSION.
is_pinned() {
	local info
	[[ -x $1 ]] && info=$(go version -m "$1" 2>/dev/null) || return 1
	grep -Eq "^[[:space:]]+mod[[:space:]]+github\.com/ollama/ollama[[:space:]]+${OLLAMA_VERSION//./\\.}([[:space:]]|$)" <<<"$info"
}

default_gobin() {
	local gobin
	gobin=$(go env GOBIN)
	if [[ -z $gobin ]]; then
		local gopath
		gopath=$(go env GOPATH)
		gobin=${gopath%%:*}/bin
	fi
	echo "$gobin"
}

as_root() {
	if [[ $(id -u) == 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		sudo "$@"
	else
		return 1
	fi
}

# Build dependencies of Ollama v0.10.1: a C/C++ toolchain for cgo and nlohmann/json.
ensure_build_deps() {
	local pkgs=()
	command -v gcc >/dev/null || pkgs+=(gcc)
	command -v g++ >/dev/null || pkgs+=(g++)
	[[ -f /usr/include/nlohmann/json.hpp ]] || pkgs+=(nlohmann-json3-dev)
	((${#pkgs[@]} == 0)) && return 0
	command -v apt-get >/dev/null ||
		die "building Ollama needs ${pkgs[*]} (C/C++ compiler and the nlohmann/json header) and there is no apt-get to install them"
	log "installing build dependencies: ${pkgs[*]} (apt-get)"
	local aptlog=$STATE/apt.log
	{
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update &&
			as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
	} >"$aptlog" 2>&1 || die "apt-get could not install ${pkgs[*]} (need root or passwordless sudo)" "$aptlog"
}

# find_ollama: print the path of an ollama v0.10.1 binary, building it if needed.
find_ollama() {
	if [[ -n ${OLLAMA_BIN:-} ]]; then
		[[ -x $OLLAMA_BIN ]] || die "OLLAMA_BIN=$OLLAMA_BIN is not an executable file"
		is_pinned "$OLLAMA_BIN" || log "warning: OLLAMA_BIN=$OLLAMA_BIN is not a go-built ollama $OLLAMA_VERSION; using it anyway"
		echo "$OLLAMA_BIN"
		return
	fi
	command -v go >/dev/null || die "go is not on PATH (needed to build Ollama and the test model)"
	local gobin candidate
	gobin=$(default_gobin)
	for candidate in "$STATE/bin/ollama" "$gobin/ollama" "$(command -v ollama || true)"; do
		if [[ -n $candidate ]] && is_pinned "$candidate"; then
			echo "$candidate"
			return
		fi
	done

	# Not found: build it. Do not overwrite a different ollama in GOBIN.
	local target=$gobin
	[[ -e $gobin/ollama ]] && target=$STATE/bin
	ensure_build_deps
	mkdir -p "$target"
	log "building ollama $OLLAMA_VERSION into $target (go install, takes a few minutes; log: $STATE/build.log)"
	GOBIN=$target GOFLAGS= go install "github.com/ollama/ollama@$OLLAMA_VERSION" >"$STATE/build.log" 2>&1 ||
		die "go install github.com/ollama/ollama@$OLLAMA_VERSION failed" "$STATE/build.log"
	is_pinned "$target/ollama" || die "built $target/ollama but it is not ollama $OLLAMA_VERSION" "$STATE/build.log"
	echo "$target/ollama"
}

# ---------------------------------------------------------------- server state

server_pid() {
	local pid
	[[ -f $PIDFILE ]] || return 1
	pid=$(<"$PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	# Alive, and really an "ollama serve" (not a recycled pid).
	local cmdline
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmdline == *"ollama serve"* ]] || return 1
	echo "$pid"
}

# http_ok URL: GET URL succeeds.
http_ok() {
	if command -v curl >/dev/null; then
		curl -fsS --max-time 3 -o /dev/null "$1" 2>/dev/null
	else
		# Fallback without curl: bash /dev/tcp, expect an HTTP 200 status line.
		local hostport=${1#http://} path
		path=/${hostport#*/}
		hostport=${hostport%%/*}
		exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" 2>/dev/null || return 1
		printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" >&3
		local status
		IFS= read -r -t 3 status <&3 || status=
		exec 3<&- 3>&-
		[[ $status == *" 200 "* ]]
	fi
}

healthy() {
	server_pid >/dev/null && [[ -s $URLFILE ]] && http_ok "$(<"$URLFILE")/api/version"
}

kill_server() {
	local pid pgid=""
	[[ -f $STATE/serve.pgid ]] && pgid=$(<"$STATE/serve.pgid")
	if pid=$(server_pid); then
		log "stopping ollama serve (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	# The server was started as its own process group (setsid): end whatever is
	# left of that group, i.e. runner processes of a server that did not exit
	# cleanly.
	if [[ $pgid =~ ^[0-9]+$ ]] && kill -0 -- "-$pgid" 2>/dev/null; then
		kill -KILL -- "-$pgid" 2>/dev/null || true
	fi
	rm -f "$PIDFILE" "$STATE/serve.pgid"
}

# ---------------------------------------------------------------- start

start_server() {
	local ollama=$1
	[[ -f $LOG ]] && mv -f "$LOG" "$LOG.1"
	mkdir -p "$STATE/models" "$STATE/home"
	log "starting $ollama serve (log: $LOG)"
	# Port 0: the kernel picks a free loopback port; Ollama logs "Listening on ...".
	# HOME is private so the server's key pair and history stay in the state dir.
	local setsid=()
	command -v setsid >/dev/null && setsid=(setsid)
	(
		exec 9>&- # do not hold the start lock for the server's lifetime
		cd "$STATE"
		exec env \
			HOME="$STATE/home" \
			OLLAMA_HOST=127.0.0.1:0 \
			OLLAMA_MODELS="$STATE/models" \
			OLLAMA_KEEP_ALIVE=-1 \
			OLLAMA_NUM_PARALLEL="${TOLLGATE_OLLAMA_NUM_PARALLEL:-4}" \
			OLLAMA_MAX_LOADED_MODELS=2 \
			OLLAMA_MAX_QUEUE=512 \
			OLLAMA_NOPRUNE=1 \
			"${setsid[@]}" "$ollama" serve
	) </dev/null >>"$LOG" 2>&1 &
	local pid=$!
	echo "$pid" >"$PIDFILE"

	local addr="" i
	for i in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || die "ollama serve exited during startup"
		addr=$(grep -o 'Listening on 127\.0\.0\.1:[0-9]*' "$LOG" 2>/dev/null | head -n1 | sed 's/.* //') || true
		[[ -n $addr ]] && break
		sleep 0.1
	done
	[[ -n $addr ]] || {
		kill_server
		die "ollama serve did not report a listening address within 30s"
	}
	echo "http://$addr" >"$URLFILE"
	if [[ $(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') == "$pid" ]]; then
		echo "$pid" >"$STATE/serve.pgid"
	fi
	for i in $(seq 100); do
		http_ok "http://$addr/api/version" && return 0
		kill -0 "$pid" 2>/dev/null || die "ollama serve exited during startup"
		sleep 0.1
	done
	kill_server
	die "ollama serve at http://$addr does not answer /api/version"
}

create_model() {
	local ollama=$1 url
	url=$(<"$URLFILE")
	log "writing the tiny model and running ollama create $MODEL"
	(cd "$ROOT" && go run ./internal/tinymodel/cmd/tinygguf -o "$STATE/tiny.gguf") >"$STATE/tinygguf.log" 2>&1 ||
		die "go run ./internal/tinymodel/cmd/tinygguf failed" "$STATE/tinygguf.log"
	# One thread: the model is tiny, and ggml's thread barriers make several
	# threads 10x slower when the CPU is busy (e.g. go test -race ./... running).
	printf 'FROM ./tiny.gguf\nPARAMETER num_thread 1\n' >"$STATE/Modelfile"
	(cd "$STATE" && OLLAMA_HOST=$url "$ollama" create "$MODEL" -f Modelfile) </dev/null >"$STATE/create.log" 2>&1 ||
		die "ollama create $MODEL failed (see also $LOG)" "$STATE/create.log"
	# Load it now so tests do not pay for it, and check that it really generates.
	log "loading $MODEL"
	(OLLAMA_HOST=$url "$ollama" run "$MODEL" "ping") </dev/null >"$STATE/warmup.log" 2>&1 ||
		die "the model $MODEL does not load or generate (ollama run failed; see also $LOG)" "$STATE/warmup.log"
}

write_env() {
	local url tmp
	url=$(<"$URLFILE")
	tmp=$(mktemp "$STATE/env.XXXXXX")
	printf 'export TOLLGATE_TEST_OLLAMA_URL=%s\nexport TOLLGATE_TEST_OLLAMA_MODEL=%s\n' "$url" "$MODEL" >"$tmp"
	# The binary, for tests that start a second server (realollama.Start).
	# ($ollama is cmd_start's.)
	if [[ -n ${ollama:-} ]]; then
		printf 'export TOLLGATE_TEST_OLLAMA_BIN=%s\n' "$(realpath "$ollama")" >>"$tmp"
	fi
	mv -f "$tmp" "$ENVFILE"
}

cmd_start() {
	mkdir -p "$STATE"
	# One start at a time per state dir (several test runs may start at once).
	if command -v flock >/dev/null; then
		exec 9>"$STATE/lock"
		flock -w 900 9 || die "timed out waiting for another start to finish ($STATE/lock)"
	fi
	local ollama result
	ollama=$(find_ollama)
	if healthy; then
		result=reused
		log "reusing running server $(<"$URLFILE") (pid $(server_pid))"
	else
		kill_server
		rm -f "$ENVFILE" "$URLFILE" "$STATE/started-by-test-sh"
		start_server "$ollama"
		result=started
	fi
	create_model "$ollama"
	write_env
	log "ready: $(<"$URLFILE") model $MODEL (env: $ENVFILE)"
	echo "$result"
}

cmd_stop() {
	if [[ -d $STATE ]]; then
		kill_server
		rm -f "$ENVFILE" "$URLFILE" "$STATE/started-by-test-sh"
	fi
}

cmd_env() {
	healthy || die "no healthy test server in $STATE; run: scripts/ollama-test-server.sh start"
	[[ -f $ENVFILE ]] || die "server is running but $ENVFILE is missing; run: scripts/ollama-test-server.sh start"
	cat "$ENVFILE"
}

cmd_status() {
	if healthy; then
		echo "running: $(<"$URLFILE") (pid $(server_pid), state $STATE)"
	else
		echo "not running (state $STATE)"
		return 1
	fi
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
status) cmd_status ;;
*)
	echo "usage: $0 start|stop|env|status" >&2
	exit 2
	;;
esac
