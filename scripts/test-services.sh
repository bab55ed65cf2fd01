#!/usr/bin/env bash
# Runs a throwaway PostgreSQL and Redis for the tests of several replicas
# (issue 16): Debian's `postgresql` and `redis-server`, each on a free
# loopback port, with its data in a temporary folder.
#
# Usage: scripts/test-services.sh start|stop|env|status
#
#   start   Make sure both servers from the state dir run (reuse them, or start
#           new ones) and write the env file. Prints "started" or "reused" on
#           stdout; progress goes to stderr.
#   stop    Stop both servers and delete their data folders.
#   env     Print the env file (export lines):
#             eval "$(scripts/test-services.sh env)"
#   status  Exit 0 and print the URLs if both servers answer.
#
# State lives in $TOLLGATE_SERVICES_STATE_DIR, by default .test-services/ at the
# repo root:
#   env        export TOLLGATE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
#              export TOLLGATE_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#   pgdata     path of PostgreSQL's data folder (a mktemp -d folder owned by postgres)
#   redisdir   path of Redis's folder
#
# PostgreSQL refuses to run as root, so as root initdb and pg_ctl run as the
# user postgres (runuser). The test cluster trusts local connections, has
# fsync off and listens on 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${TOLLGATE_SERVICES_STATE_DIR:-$ROOT/.test-services}
ENVFILE=$STATE/env

log() { echo "test-services: $*" >&2; }

die() {
	local f=${2:-}
	{
		echo
		echo "test-services: ERROR: $1"
		if [[ -n $f && -s $f ]]; then
			echo "---- last 30 lines of $f ----"
			tail -n 30 "$f"
			echo "---- end of $f ----"
		fi
	} >&2
	exit 1
}

# ---------------------------------------------------------------- binaries

pg_bin() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x $d/pg_ctl && -x $d/initdb ]] && { echo "$d"; return; }
	done
	command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return; }
	die "PostgreSQL is not installed (no pg_ctl): apt-get install postgresql"
}

redis_bin() {
	command -v redis-server >/dev/null || die "Redis is not installed (no redis-server): apt-get install redis-server"
	command -v redis-server
}

# as_pg CMD...: run CMD as the postgres user when we are root.
as_pg() {
	if [[ $(id -u) == 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# free_port: print a loopback TCP port nobody listens on.
free_port() {
	local p i
	for i in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "found no free port"
}

# ---------------------------------------------------------------- health

read_state() { [[ -s $STATE/$1 ]] && cat "$STATE/$1"; }

pg_ok() {
	local d port
	d=$(read_state pgdata) && port=$(read_state pgport) || return 1
	"$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 2>/dev/null
}

redis_ok() {
	local port
	port=$(read_state redisport) || return 1
	if command -v redis-cli >/dev/null; then
		[[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]
	else
		local reply
		exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
		printf 'PING\r\n' >&3
		IFS= read -r -t 2 reply <&3 || reply=
		exec 3<&- 3>&-
		[[ $reply == "+PONG"* ]]
	fi
}

# ---------------------------------------------------------------- start / stop

start_pg() {
	local bin d port i
	bin=$(pg_bin)
	d=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-pg.XXXXXX")
	echo "$d" >"$STATE/pgdata"
	[[ $(id -u) == 0 ]] && chown postgres: "$d"
	chmod 700 "$d"
	log "initdb in $d"
	as_pg "$bin/initdb" -D "$d/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$STATE/initdb.log" 2>&1 ||
		die "initdb failed" "$STATE/initdb.log"
	for i in 1 2 3; do
		port=$(free_port)
		log "starting PostgreSQL on 127.0.0.1:$port"
		if as_pg "$bin/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 60 start \
			-o "-c listen_addresses=127.0.0.1 -p $port -k $d -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
			>"$STATE/pg_ctl.log" 2>&1 9>&-; then
			echo "$port" >"$STATE/pgport"
			return 0
		fi
		log "PostgreSQL did not start on port $port; trying another"
	done
	cp -f "$d/postgres.log" "$STATE/postgres.log" 2>/dev/null || true
	die "PostgreSQL did not start" "$STATE/postgres.log"
}

start_redis() {
	local bin d port i
	bin=$(redis_bin)
	d=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-redis.XXXXXX")
	echo "$d" >"$STATE/redisdir"
	for i in 1 2 3; do
		port=$(free_port)
		log "starting Redis on 127.0.0.1:$port"
		echo "$port" >"$STATE/redisport"
		"$bin" --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
			--dir "$d" --pidfile "$d/redis.pid" --logfile "$d/redis.log" >/dev/null 2>&1 9>&- || true
		for _ in $(seq 50); do
			redis_ok && return 0
			sleep 0.1
		done
		log "Redis did not answer on port $port; trying another"
	done
	die "Redis did not start" "$d/redis.log"
}

stop_pg() {
	local d
	d=$(read_state pgdata) || return 0
	if [[ -d $d/data ]]; then
		log "stopping PostgreSQL ($d)"
		as_pg "$(pg_bin)/pg_ctl" -D "$d/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
	fi
	[[ $d == */tollgate-pg.* ]] && rm -rf "$d"
	rm -f "$STATE/pgdata" "$STATE/pgport"
}

stop_redis() {
	local d pid
	d=$(read_state redisdir) || return 0
	if [[ -s $d/redis.pid ]]; then
		pid=$(<"$d/redis.pid")
		if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q redis-server; then
			log "stopping Redis (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 50); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	[[ $d == */tollgate-redis.* ]] && rm -rf "$d"
	rm -f "$STATE/redisdir" "$STATE/redisport"
}

write_env() {
	local tmp
	tmp=$(mktemp "$STATE/env.XXXXXX")
	printf 'export TOLLGATE_TEST_POSTGRES_URL=%s\nexport TOLLGATE_TEST_REDIS_URL=%s\n' \
		"postgres://postgres@127.0.0.1:$(read_state pgport)/postgres?sslmode=disable" \
		"redis://127.0.0.1:$(read_state redisport)/0" >"$tmp"
	mv -f "$tmp" "$ENVFILE"
}

cmd_start() {
	mkdir -p "$STATE"
	if command -v flock >/dev/null; then
		exec 9>"$STATE/lock"
		flock -w 300 9 || die "timed out waiting for another start to finish ($STATE/lock)"
	fi
	local result=reused
	if ! pg_ok; then
		stop_pg
		start_pg
		result=started
	fi
	if ! redis_ok; then
		stop_redis
		start_redis
		result=started
	fi
	write_env
	log "ready: PostgreSQL 127.0.0.1:$(read_state pgport), Redis 127.0.0.1:$(read_state redisport) (env: $ENVFILE)"
	echo "$result"
}

cmd_stop() {
	[[ -d $STATE ]] || return 0
	stop_pg
	stop_redis
	rm -f "$ENVFILE" "$STATE/started-by-test-sh"
}

cmd_env() {
	pg_ok && redis_ok || die "the test services in $STATE are not running; run: scripts/test-services.sh start"
	cat "$ENVFILE"
}

cmd_status() {
	if pg_ok && redis_ok; then
		echo "running: PostgreSQL 127.0.0.1:$(read_state pgport), Redis 127.0.0.1:$(read_state redisport) (state $STATE)"
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
