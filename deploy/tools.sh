#!/usr/bin/env bash
# Installs the command-line tools the tests (or lint) need, when missing:
#   deploy/tools.sh test   mailpit (SMTP test server), chromium (browser test), promtool (alert/recording rule checks),
#                          python3-pika (the Python participant example, checked by app tests)
#   deploy/tools.sh lint   golangci-lint
#   deploy/tools.sh mailpit   mailpit only (`make run`)
# Go tools go to $(go env GOPATH)/bin, pinned to the versions below.
set -euo pipefail

MAILPIT_VERSION=v1.27.11
GOLANGCI_LINT_VERSION=v2.15.0

GOBIN=$(go env GOPATH)/bin
export PATH="$GOBIN:$PATH"

log() { printf 'tools: %s\n' "$*" >&2; }

install_promtool() {
	command -v promtool >/dev/null 2>&1 && return 0
	# promtool ships in Debian's "prometheus" package. Installing that package
	# would also install (and, with an init system, start) a Prometheus server
	# that nothing here wants, so take just the promtool binary out of it.
	if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
		log "installing promtool from the Debian prometheus package"
		local tmp
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' RETURN
		if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
			if [[ $(id -u) == 0 ]]; then
				apt-get update -qq
			fi
			(cd "$tmp" && apt-get download -qq prometheus >/dev/null)
		fi
		dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
		mkdir -p "$GOBIN"
		install -m 0755 "$tmp/x/usr/bin/promtool" "$GOBIN/promtool"
		return 0
	fi
	log "promtool is missing: install Prometheus's promtool (https://prometheus.io/download/) on PATH"
	return 1
}

install_pika() {
	for py in python3 /usr/bin/python3; do
		"$py" -c 'import pika' >/dev/null 2>&1 && return 0
	done
	if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
		log "installing python3-pika from the Debian packages"
		apt-get install -y -qq python3-pika >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-pika >/dev/null; }
		return 0
	fi
	log "pika is missing: apt-get install python3-pika (or pip install pika) for the Python participant test"
	return 1
}


install_mailpit() {
	command -v mailpit >/dev/null 2>&1 && return 0
	log "installing mailpit $MAILPIT_VERSION (go install: downloads and compiles it once, a minute or two)"
	go install "github.com/axllent/mailpit@$MAILPIT_VERSION"
}

# Debian's chromium drives the privacy page's browser test (chromedp).
install_chromium() {
	command -v chromium >/dev/null 2>&1 && return 0
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		log "installing chromium (apt-get) for the privacy page's browser test"
		apt-get install -y --no-install-recommends chromium && return 0
	fi
	log "chromium is missing: apt-get install chromium for TestPrivacyPageInBrowser"
	return 1
}

case ${1:-test} in
test)
	install_mailpit
	install_promtool
	install_pika
	install_chromium
	;;
mailpit)
	install_mailpit
	;;
lint)
	if ! command -v golangci-lint >/dev/null 2>&1; then
		log "installing golangci-lint $GOLANGCI_LINT_VERSION"
		go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
	fi
	;;
*)
	log "usage: $0 test|lint|mailpit"
	exit 2
	;;
esac
