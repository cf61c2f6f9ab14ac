#!/usr/bin/env bash
# Makes PostgreSQL (5432), RabbitMQ (5672) and Redis (6379) reachable on
# 127.0.0.1 for development and tests, trying in order:
#   1. they already answer: do nothing (and say nothing);
#   2. a Docker engine works: start the missing ones from deploy/docker-compose.yml;
#   3. Debian/Ubuntu as root: install the distribution packages that are
#      missing and start the servers directly (no systemd needed);
#   4. otherwise: name exactly what to install, and fail.
# Safe to run any number of times. A server that already answers is never
# restarted or reconfigured: it may hold other work.
#
# deploy/services.sh --for-tests (`make test` only) additionally raises the
# connection limit of a local Debian PostgreSQL below 200 connections, which
# restarts it; it says so before doing it.
set -euo pipefail

cd "$(dirname "$0")/.."

# Seconds to wait for a server to answer after starting it.
WAIT=${GDPR_SERVICES_WAIT:-180}

log() { printf 'services: %s\n' "$*" >&2; }

# answers PORT: something accepts TCP connections on 127.0.0.1:PORT.
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port NAME PORT: wait until PORT answers, or fail.
wait_port() {
	local name=$1 port=$2 i
	for ((i = 0; i < WAIT * 2; i++)); do
		answers "$port" && return 0
		sleep 0.5
	done
	log "$name did not answer on 127.0.0.1:$port within ${WAIT}s"
	return 1
}

# ensure_connections (--for-tests only): the test suite runs packages in
# parallel, each test with its own database and pool, and runs out of
# PostgreSQL's default 100 connections. A local Debian cluster we may manage
# (root, pg_ctlcluster) that answers with fewer than 200 is raised to 300 and
# restarted, once, before any test runs. Anything else is left as it is.
ensure_connections() {
	[[ $(id -u) == 0 ]] && command -v pg_ctlcluster >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 || return 0
	local current ver
	current=$(psql -h 127.0.0.1 -U root -d postgres -tAc 'SHOW max_connections' 2>/dev/null) || return 0
	((current >= 200)) && return 0
	ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
	[[ -n $ver && -d /etc/postgresql/$ver/main ]] || return 0
	log "make test: raising PostgreSQL max_connections from $current to 300 (the tests run in parallel) and RESTARTING it"
	mkdir -p "/etc/postgresql/$ver/main/conf.d"
	echo 'max_connections = 300 # gdpr deploy/services.sh: parallel tests' >"/etc/postgresql/$ver/main/conf.d/gdpr-dev.conf"
	pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
	wait_port postgres 5432
}

for_tests=false
case ${1:-} in
--for-tests) for_tests=true ;;
"") ;;
*)
	log "usage: $0 [--for-tests]"
	exit 2
	;;
esac

declare -A PORT=([postgres]=5432 [rabbitmq]=5672 [redis]=6379)
missing=()
for s in postgres rabbitmq redis; do
	answers "${PORT[$s]}" || missing+=("$s")
done
if ((${#missing[@]} == 0)); then
	if $for_tests; then
		ensure_connections
	fi
	exit 0
fi
log "not answering: ${missing[*]}"

# --- 2. Docker ---------------------------------------------------------------
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
	log "starting ${missing[*]} with docker compose (deploy/docker-compose.yml)"
	# --wait returns once the containers' health checks pass.
	docker compose -f deploy/docker-compose.yml up -d --wait "${missing[@]}"
	for s in "${missing[@]}"; do wait_port "$s" "${PORT[$s]}"; done
	exit 0
fi

# --- 3. Debian/Ubuntu packages, started without systemd ----------------------
if [[ -r /etc/debian_version && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
	declare -A PKG=([postgres]=postgresql [rabbitmq]=rabbitmq-server [redis]=redis-server)
	declare -A BIN=([postgres]=pg_ctlcluster [rabbitmq]=rabbitmq-server [redis]=redis-server)
	install=()
	for s in "${missing[@]}"; do
		command -v "${BIN[$s]}" >/dev/null 2>&1 || install+=("${PKG[$s]}")
	done
	if ((${#install[@]})); then
		log "installing ${install[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# Package scripts may try to start the services through an init
		# system; without one they just skip that, and we start them below.
		apt-get install -y -qq --no-install-recommends "${install[@]}" >/dev/null
	fi
	for s in "${missing[@]}"; do
		case $s in
		postgres)
			ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
			if [[ ! -d /etc/postgresql/$ver/main ]]; then
				pg_createcluster "$ver" main >/dev/null
			fi
			hba=/etc/postgresql/$ver/main/pg_hba.conf
			if ! grep -q 'gdpr deploy/services.sh' "$hba"; then
				# Debian's default for TCP connections to localhost is a
				# password (scram-sha-256). The service and its tests connect
				# as postgres://root@127.0.0.1 without one, so trust loopback
				# connections. FOR LOCAL DEVELOPMENT ONLY: any local user can
				# then connect as any database role. The first matching line
				# of pg_hba.conf wins, hence these go at the top.
				log "trusting loopback connections in $hba (local development only)"
				{
					echo '# Added by gdpr deploy/services.sh for LOCAL DEVELOPMENT ONLY:'
					echo '# loopback connections are trusted without a password.'
					echo 'host    all    all    127.0.0.1/32    trust'
					echo 'host    all    all    ::1/128         trust'
					cat "$hba"
				} >"$hba.new"
				chown --reference="$hba" "$hba.new"
				chmod --reference="$hba" "$hba.new"
				mv "$hba.new" "$hba"
			fi
			conf=/etc/postgresql/$ver/main/conf.d/gdpr-dev.conf
			if [[ ! -e $conf && " ${install[*]} " == *" postgresql "* ]]; then
				# Only a server installed just now, before its first use: the
				# test suite runs many packages in parallel, each test with
				# its own database and connection pool, and 100 connections
				# (the default) run out.
				mkdir -p "$(dirname "$conf")"
				echo 'max_connections = 300 # gdpr deploy/services.sh: parallel tests' >"$conf"
			fi
			if answers 5432; then
				# The package's own scripts started it: restart to apply the above.
				pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
			else
				log "starting PostgreSQL $ver"
				pg_ctlcluster --skip-systemctl-redirect "$ver" main start
				wait_port postgres 5432
			fi
			# The service connects as "root" (the default DSN).
			# (cd /: psql as postgres may not be allowed into the caller's directory.)
			if [[ $(cd / && runuser -u postgres -- psql -h /var/run/postgresql -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'root'") != 1 ]]; then
				log "creating PostgreSQL superuser role root"
				(cd / && runuser -u postgres -- psql -h /var/run/postgresql -qc 'CREATE ROLE root SUPERUSER LOGIN')
			fi
			;;
		redis)
			# The package's scripts may have started it already.
			answers 6379 && continue
			log "starting Redis"
			mkdir -p /var/lib/redis /var/log/redis
			# No persistence: it only holds locks, which are safe to lose.
			redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
				--save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/gdpr-dev.log
			wait_port redis 6379
			;;
		rabbitmq)
			answers 5672 && continue
			log "starting RabbitMQ (this takes a while)"
			rabbitmq-server -detached
			timeout "$WAIT" rabbitmqctl -q await_startup
			wait_port rabbitmq 5672
			;;
		esac
	done
	exit 0
fi

# --- 4. Nothing we can do ourselves -------------------------------------------
log "cannot start ${missing[*]}: no working Docker engine, and not root on Debian/Ubuntu."
log "Either install Docker (with the compose plugin) and run 'make services' again, or install and start:"
for s in "${missing[@]}"; do
	case $s in
	postgres) log "  PostgreSQL >= 13 on 127.0.0.1:5432, with a superuser role 'root' that may connect from 127.0.0.1 without a password (pg_hba.conf: host all all 127.0.0.1/32 trust)" ;;
	rabbitmq) log "  RabbitMQ >= 3.8 on 127.0.0.1:5672 with the default guest/guest user" ;;
	redis) log "  Redis >= 6 on 127.0.0.1:6379 without a password" ;;
	esac
done
log "or point the service and its tests elsewhere: GDPR_POSTGRES_DSN, GDPR_AMQP_URL, GDPR_REDIS_ADDR and GDPR_TEST_POSTGRES_URL, GDPR_TEST_AMQP_URL, GDPR_TEST_REDIS_ADDR."
exit 1
