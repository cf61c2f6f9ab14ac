#!/usr/bin/env bash
# `make run`: gdpr answering data subject requests for a demo company, on
# the local PostgreSQL, RabbitMQ and Redis, with nothing to configure:
#   1. makes the services answer (deploy/services.sh: a server that already
#      answers is left exactly as it is);
#   2. builds bin/gdpr, showing progress;
#   3. (re)creates the demo company database from testdata/demo/company.sql;
#   4. starts Mailpit when no SMTP server answers on the demo's SMTP port;
#   5. starts the demo company's services (the helpdesk, and the shop and
#      newsletter erasure participants) and `gdpr all --config deploy/demo.yaml`;
#   6. once gdpr is ready, prints what to try, then runs until Ctrl-C and
#      stops everything it started.
#
# Everything the demo writes goes to var/demo/ (logs in var/demo/logs/).
# The settings below let a demo run beside others (tests, or a machine whose
# port 8080 is taken: README.md, "Try it"):
#   GDPR_DEMO_BINARY        run this gdpr binary instead of building bin/gdpr
#   GDPR_DEMO_DIR           var/demo
#   GDPR_DEMO_DSN           gdpr's own database (deploy/demo.yaml's postgres.dsn)
#   GDPR_DEMO_COMPANY_DSN   the demo company's database
#   GDPR_DEMO_PREFIX        RabbitMQ and Redis name prefix (gdpr-demo)
#   GDPR_DEMO_API_ADDR, GDPR_DEMO_ADMIN_ADDR, GDPR_DEMO_HELPDESK_ADDR,
#   GDPR_DEMO_SMTP_PORT, GDPR_DEMO_MAILPIT_ADDR   listen addresses
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*"; }
log() { printf 'demo: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# answers HOST:PORT: something accepts TCP connections there.
answers() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

CONFIG=deploy/demo.yaml
BIN=${GDPR_DEMO_BINARY:-${BIN:-bin/gdpr}}
DIR=${GDPR_DEMO_DIR:-var/demo}
# The defaults are deploy/demo.yaml's values.
DEF_DSN='postgres://root@127.0.0.1:5432/gdpr_demo?sslmode=disable'
DEF_COMPANY_DSN='postgres://root@127.0.0.1:5432/gdpr_demo_company?sslmode=disable'
DSN=${GDPR_DEMO_DSN:-$DEF_DSN}
COMPANY_DSN=${GDPR_DEMO_COMPANY_DSN:-$DEF_COMPANY_DSN}
PREFIX=${GDPR_DEMO_PREFIX:-gdpr-demo}
API=${GDPR_DEMO_API_ADDR:-127.0.0.1:8080}
ADMIN=${GDPR_DEMO_ADMIN_ADDR:-127.0.0.1:9090}
HELPDESK=${GDPR_DEMO_HELPDESK_ADDR:-127.0.0.1:8081}
SMTP_PORT=${GDPR_DEMO_SMTP_PORT:-1025}
MAILPIT_WEB=${GDPR_DEMO_MAILPIT_ADDR:-127.0.0.1:8025}
# How long gdpr may take to be ready once started (migrations, topology).
READY_WAIT=${GDPR_DEMO_READY_WAIT:-120}

# The demo runs on deploy/demo.yaml alone: settings left in the environment
# (GDPR_SERVE_API_TOKENS from an earlier setup, say) would override it.
for v in $(compgen -e); do
	case $v in
	GDPR_DEMO_* | GDPR_TEST_*) ;;
	GDPR_*)
		log "ignoring $v from your environment (the demo runs on $CONFIG)"
		unset "$v"
		;;
	esac
done

command -v curl >/dev/null 2>&1 || die "curl is needed (to check gdpr is ready, and to try it): install curl"

# --- 1. services ---------------------------------------------------------------
deploy/services.sh

# --- 2. build, with progress ---------------------------------------------------
# go build prints nothing for minutes on a fresh machine; show what it does.
build() {
	command -v go >/dev/null 2>&1 || die "Go is needed to build gdpr (see go.mod for the version): https://go.dev/doc/install"
	local tty=false n=0 total
	[[ -t 2 ]] && tty=true
	# GOPROXY=off: fails, instead of downloading in silence, while modules are missing.
	if ! GOPROXY=off go list -deps . >/dev/null 2>&1; then
		log "downloading Go modules (first start only; about a minute)"
		if ! go mod download -x 2>&1 | while read -r line; do
			if [[ $line == "# get "*".zip: 200 "* ]]; then
				n=$((n + 1))
				if $tty; then printf '\rdemo: downloaded %d modules' "$n" >&2; elif ((n % 10 == 0)); then log "downloaded $n modules"; fi
			elif [[ $line != "# get "* ]]; then
				printf '\n%s\n' "$line" >&2 # an error
			fi
		done; then
			die "downloading Go modules failed"
		fi
		$tty && printf '\n' >&2
		go list -deps . >/dev/null || die "downloading Go modules failed"
	fi
	total=$(go list -deps . | wc -l)
	log "compiling $BIN ($total packages; the first build takes a few minutes on 2 cores, later ones seconds)"
	mkdir -p "$(dirname "$BIN")"
	n=0
	# -v names each package as it is compiled (cached ones are not named).
	if ! CGO_ENABLED=0 go build -v -trimpath -ldflags "${LDFLAGS:--s -w}" -o "$BIN" . 2>&1 | while read -r pkg; do
		n=$((n + 1))
		if [[ $pkg == *" "* || $pkg == *.go:* ]]; then
			printf '\n%s\n' "$pkg" >&2 # a compile error
		elif $tty; then
			printf '\rdemo: compiled %d/%d packages\033[K' "$n" "$total" >&2
		elif ((n * 10 / total > (n - 1) * 10 / total)); then
			log "compiled $n/$total packages" # every tenth
		fi
	done; then
		die "building $BIN failed"
	fi
	$tty && printf '\n' >&2
	log "built $BIN"
}
if [[ -n ${GDPR_DEMO_BINARY:-} ]]; then
	[[ -x $BIN ]] || die "GDPR_DEMO_BINARY=$BIN is not an executable"
else
	build
fi

# --- 3. the demo company and the configuration ---------------------------------
mkdir -p "$DIR/logs"
# with_param DSN KEY=VALUE adds a URL query parameter.
with_param() { if [[ $1 == *"?"* ]]; then printf '%s&%s' "$1" "$2"; else printf '%s?%s' "$1" "$2"; fi; }
# Tests move the demo to other ports and names: write deploy/demo.yaml with
# those instead (sed replacement text escaped).
esc() { printf '%s' "$1" | sed 's/[&#\\]/\\&/g'; }
if [[ $DSN != "$DEF_DSN" || $COMPANY_DSN != "$DEF_COMPANY_DSN" || $PREFIX != gdpr-demo || $API != 127.0.0.1:8080 ||
	$ADMIN != 127.0.0.1:9090 || $HELPDESK != 127.0.0.1:8081 || $SMTP_PORT != 1025 || $DIR != var/demo ]]; then
	sed -e "s#$DEF_COMPANY_DSN#$(esc "$COMPANY_DSN")#" \
		-e "s#$DEF_DSN#$(esc "$DSN")#" \
		-e "s#gdpr-demo#$(esc "$PREFIX")#" \
		-e "s#127.0.0.1:8080#$(esc "$API")#" \
		-e "s#127.0.0.1:9090#$(esc "$ADMIN")#" \
		-e "s#127.0.0.1:8081#$(esc "$HELPDESK")#" \
		-e "s#smtp_port: 1025#smtp_port: $SMTP_PORT#" \
		-e "s#./var/demo/reports#$(esc "$DIR/reports")#" \
		deploy/demo.yaml >"$DIR/gdpr.yaml"
	CONFIG=$DIR/gdpr.yaml
fi

log "loading the demo company (testdata/demo/company.sql)"
"$BIN" demo company --dsn "$COMPANY_DSN" --fixtures testdata/demo/company.sql

# --- 4. processes, and stopping them -------------------------------------------
# PIDs of what this script started, in start order; also in $DIR/pids.
pids=()
names=()
: >"$DIR/pids"
# start NAME COMMAND...: runs it in the background, in its own session, so a
# Ctrl-C reaches only this script, which then stops each process once.
start() {
	local name=$1
	shift
	if command -v setsid >/dev/null 2>&1; then
		setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
	else
		"$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
	fi
	pids+=("$!")
	names+=("$name")
	printf '%s %s\n' "$name" "$!" >>"$DIR/pids"
}

# state PID: the process's state letter (Z for exited, not yet reaped), empty once gone.
state() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) && s=${s##*) } && printf '%s' "${s%% *}"; }
alive() { local s; s=$(state "$1"); [[ -n $s && $s != Z ]]; }

stopped=false
stop_all() {
	$stopped && return
	stopped=true
	((${#pids[@]})) || return 0
	log "stopping what the demo started"
	local i j pid
	# Last started first: gdpr drains before the services it talks to stop.
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid=${pids[i]}
		if alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			# gdpr drains for up to shutdown.drain_timeout (20s).
			for ((j = 0; j < 150; j++)); do
				alive "$pid" || break
				sleep 0.2
			done
			if alive "$pid"; then
				log "${names[i]} did not stop within 30s: killing it"
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
		wait "$pid" 2>/dev/null || true
	done
	log "stopped"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# tail_log NAME: the end of a process's log, when something went wrong.
tail_log() {
	log "last lines of $DIR/logs/$1.log:"
	tail -n 30 "$DIR/logs/$1.log" >&2 || true
}

# --- 5. SMTP: Mailpit unless a server answers already ---------------------------
mail_note=
if answers "127.0.0.1:$SMTP_PORT"; then
	log "an SMTP server answers on 127.0.0.1:$SMTP_PORT: the emails go there"
	if answers "$MAILPIT_WEB"; then
		mail_note="http://$MAILPIT_WEB (if that is the Mailpit behind 127.0.0.1:$SMTP_PORT)"
	else
		mail_note="the SMTP server on 127.0.0.1:$SMTP_PORT"
	fi
else
	export PATH="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin:$PATH"
	command -v mailpit >/dev/null 2>&1 || deploy/tools.sh mailpit
	log "starting Mailpit (SMTP 127.0.0.1:$SMTP_PORT, web http://$MAILPIT_WEB)"
	start mailpit mailpit --smtp "127.0.0.1:$SMTP_PORT" --listen "$MAILPIT_WEB" --disable-version-check --quiet
	mail_note="http://$MAILPIT_WEB (Mailpit)"
fi

# --- 6. the demo company's services, then gdpr --------------------------------------
start helpdesk "$BIN" demo helpdesk --config "$CONFIG" --addr "$HELPDESK" --dsn "$COMPANY_DSN"
# Each participant keeps its dedupe table in its own schema (search_path).
start shop "$BIN" example-participant --config "$CONFIG" --name shop \
	--dsn "$(with_param "$COMPANY_DSN" search_path=shop)" --table shop.customers --column id
start newsletter "$BIN" example-participant --config "$CONFIG" --name newsletter \
	--dsn "$(with_param "$COMPANY_DSN" search_path=newsletter)" --table newsletter.subscribers --column email --by email
start gdpr "$BIN" all --config "$CONFIG"

log "waiting for gdpr to be ready (http://$ADMIN/readyz)"
begin=$SECONDS
until curl -fsS -o /dev/null --max-time 2 "http://$ADMIN/readyz" 2>/dev/null; do
	for i in "${!pids[@]}"; do
		if ! alive "${pids[i]}"; then
			tail_log "${names[i]}"
			if grep -q 'address already in use' "$DIR/logs/${names[i]}.log" 2>/dev/null; then
				log "a port the demo listens on is taken: move the demo, e.g."
				log "  GDPR_DEMO_API_ADDR=127.0.0.1:18080 GDPR_DEMO_ADMIN_ADDR=127.0.0.1:19090 GDPR_DEMO_HELPDESK_ADDR=127.0.0.1:18081 make run"
			fi
			die "${names[i]} exited before gdpr was ready"
		fi
	done
	((SECONDS - begin < READY_WAIT)) || {
		tail_log gdpr
		die "gdpr was not ready within ${READY_WAIT}s"
	}
	sleep 0.5
done

# --- 7. what to try ---------------------------------------------------------------
token=demo-token
submit() {
	printf "curl -s http://%s/v1/requests -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '%s'" "$API" "$token" "$1"
}
say ""
say "gdpr is ready (demo configuration: $CONFIG; logs: $DIR/logs/)."
say ""
say "The demo company's shop, helpdesk and newsletter hold data about five sample"
say "customers, c-1001 (ada@example.com) to c-1005. Try, in another terminal:"
say ""
say "  # a copy of everything the company holds about Ada (access):"
say "  $(submit '{"type":"access","subject":{"id":"c-1001","email":"ada@example.com"}}')"
say ""
say "  # then erase her data everywhere (it waits for the report above). Download"
say "  # the report first: the erasure deletes gdpr's own copy too, and its link"
say "  # then answers 410 Gone:"
say "  $(submit '{"type":"erasure","subject":{"id":"c-1001","email":"ada@example.com"}}')"
say ""
say "  # a request's state: put an \"id\" from an answer above in place of ID"
say "  curl -s http://$API/v1/requests/ID -H 'Authorization: Bearer $token'"
say ""
say "  # the emails (the report's download link, then \"Your personal data was deleted\"):"
say "  $mail_note"
say ""
say "  # the data subject's own page (ask for a report without an API token; the"
say "  # verification code arrives in Mailpit), and the privacy officer's console"
say "  # (sign in with the token demo-officer-token):"
say "  http://$API/privacy"
say "  http://$API/admin/"
say ""
say "  # metrics, and the check that every request went through every stage:"
say "  curl -s http://$ADMIN/metrics | grep -E '^gdpr_(reports_generated|emails_sent|erasures_completed)_total'"
say "  $BIN reconcile --config $CONFIG"
say ""
say "Ctrl-C stops the demo and everything it started."

# Run until Ctrl-C, or until one of the processes exits on its own.
set +e
wait -n "${pids[@]}"
set -e
for i in "${!pids[@]}"; do
	if ! alive "${pids[i]}"; then
		tail_log "${names[i]}"
		die "${names[i]} exited"
	fi
done
