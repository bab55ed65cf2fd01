#!/bin/sh
# Entry point of Dockerfile.gpu: runs `ollama serve` and `tollgate serve` in
# one container and keeps them together.
#
#  1. starts Ollama and waits until it answers (`ollama list`), at most
#     OLLAMA_START_TIMEOUT seconds (default 60);
#  2. starts `tollgate serve`, passing this script's arguments on;
#  3. if either process exits, stops the other and exits non-zero (the
#     container's restart policy takes over);
#  4. on SIGTERM or SIGINT, stops tollgate first (it drains in-flight requests,
#     which still need Ollama), then Ollama, and exits with tollgate's status.
#
# Plain POSIX sh. Children are stopped with SIGTERM: a background job of a
# non-interactive shell ignores SIGINT.
set -u

ollama_pid=
tollgate_pid=

say() { printf 'entrypoint: %s\n' "$*" >&2; }

# alive PID: the process has not exited (the shell reaps its children while
# it waits, so an exited child stops answering kill -0 within a second).
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# stop PID NAME: SIGTERM, then wait for it.
stop() {
	if alive "$1"; then
		say "stopping $2"
		kill -TERM "$1" 2>/dev/null
	fi
	[ -n "$1" ] && wait "$1" 2>/dev/null
}

# nap: sleep a second in a way a trapped signal interrupts at once.
nap() {
	sleep 1 &
	wait $! 2>/dev/null
}

on_signal() {
	trap '' TERM INT
	say "got SIG$1: stopping tollgate (it drains in-flight requests), then ollama"
	status=0
	if [ -n "$tollgate_pid" ]; then
		kill -TERM "$tollgate_pid" 2>/dev/null
		wait "$tollgate_pid"
		status=$?
	fi
	stop "$ollama_pid" ollama
	say "stopped"
	exit "$status"
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

ollama serve &
ollama_pid=$!

timeout=${OLLAMA_START_TIMEOUT:-60}
waited=0
until ollama list >/dev/null 2>&1; do
	if ! alive "$ollama_pid"; then
		wait "$ollama_pid"
		status=$?
		say "ollama serve exited (status $status) before it answered"
		[ "$status" -eq 0 ] && status=1
		exit "$status"
	fi
	if [ "$waited" -ge "$timeout" ]; then
		say "ollama did not answer within ${timeout}s (OLLAMA_START_TIMEOUT)"
		stop "$ollama_pid" ollama
		exit 1
	fi
	nap
	waited=$((waited + 1))
done
say "ollama is up (pid $ollama_pid); starting tollgate"

tollgate serve "$@" &
tollgate_pid=$!

while alive "$ollama_pid" && alive "$tollgate_pid"; do
	nap
done

trap '' TERM INT
if alive "$ollama_pid"; then
	wait "$tollgate_pid"
	status=$?
	say "tollgate exited (status $status); stopping ollama"
	stop "$ollama_pid" ollama
else
	wait "$ollama_pid"
	status=$?
	say "ollama exited (status $status); stopping tollgate"
	stop "$tollgate_pid" tollgate
fi
[ "$status" -eq 0 ] && status=1
exit "$status"
