#!/bin/sh
# The cloud image's entrypoint (scripts/cloud/Containerfile; docs/cloud.md).
#
#   entrypoint.sh [serve [OPTIONS]]   migrate (waiting for the database), then serve
#   entrypoint.sh init                migrate, create the roster key files that are missing,
#                                     print the roster public key kiosks pin
#   entrypoint.sh ARGS...             any other kiosk-cloud command (riders, kiosks, ...)
#
# Settings are KIOSK_CLOUD_* variables. Secrets are files named after the setting
# (admin_token, database_url, roster-ed25519.pem, roster-data.key) in $CREDENTIALS_DIRECTORY,
# which defaults to /run/secrets, where compose and swarm mount them. A postgres_password
# file there becomes libpq's PGPASSWORD, so KIOSK_CLOUD_DATABASE_URL needs no password.
# KIOSK_CLOUD_DATABASE_WAIT_S (default 60) bounds the wait for the database at start.
# Exit codes: those of kiosk-cloud (3 a bad setting, at once; 7 the database did not answer
# within the wait); 2 a bad KIOSK_CLOUD_DATABASE_WAIT_S.
set -eu

if [ -z "${CREDENTIALS_DIRECTORY:-}" ] && [ -d /run/secrets ]; then
	CREDENTIALS_DIRECTORY=/run/secrets
	export CREDENTIALS_DIRECTORY
fi
if [ -z "${PGPASSWORD:-}" ] && [ -n "${CREDENTIALS_DIRECTORY:-}" ] &&
	[ -f "${CREDENTIALS_DIRECTORY}/postgres_password" ]; then
	PGPASSWORD=$(cat "${CREDENTIALS_DIRECTORY}/postgres_password")
	export PGPASSWORD
fi

# Migrations take a lock in the database, so replicas starting together apply each once;
# a database that is still starting is waited for, a bad setting is not.
migrate() {
	wait_s=${KIOSK_CLOUD_DATABASE_WAIT_S:-60}
	case $wait_s in '' | *[!0-9]*)
		echo "entrypoint: KIOSK_CLOUD_DATABASE_WAIT_S must be whole seconds, not '$wait_s'" >&2
		exit 2
		;;
	esac
	waited=0
	while true; do
		status=0
		kiosk-cloud migrate || status=$?
		case $status in
		0) return 0 ;;
		2 | 3 | 4) exit "$status" ;; # a usage, settings or input error: waiting cannot help
		esac
		if [ "$waited" -ge "$wait_s" ]; then
			echo "entrypoint: the database did not answer within ${wait_s}s" >&2
			exit "$status"
		fi
		sleep 2
		waited=$((waited + 2))
	done
}

if [ "$#" -eq 0 ]; then
	set -- serve
fi
case $1 in
serve)
	migrate
	exec kiosk-cloud "$@"
	;;
init)
	migrate
	exec kiosk-cloud keys init
	;;
*)
	exec kiosk-cloud "$@"
	;;
esac
