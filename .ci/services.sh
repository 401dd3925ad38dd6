#!/usr/bin/env bash
# Starts the services the scale-out tests need on this machine: RabbitMQ and
# PostgreSQL, from the Debian packages (installed with apt-get when missing).
#
# No init system runs here (no systemd), so the daemons are started directly.
# The script is idempotent and returns within a few seconds when both already answer.
#
# Progress goes to stderr; stdout carries only `export NAME=VALUE` lines, so
#     eval "$(.ci/services.sh)"
# exports:
#     SOLSTICE_TEST_AMQP_URL      amqp://…  (RabbitMQ, the vhost `solstice-test`)
#     SOLSTICE_TEST_POSTGRES_URL  postgres://…  (a database the tests may use; the
#                                 role may also CREATE DATABASE for per-test databases)
#     SOLSTICE_TEST_AMQP_RESTART  a shell command that restarts the broker (used by
#                                 the broker-restart test)
#
# The tests get a virtual host of their own, so that what they leave behind (queues of
# labels made up for one test, messages of a test that failed) stays out of the
# default vhost. With SOLSTICE_SERVICES_FRESH_VHOST=1 (set by scripts/test) the vhost
# is deleted and made anew first: a run of the suite starts on an empty broker, and
# runs on a developer's machine do not pile up queues that every broker restart then
# has to recover.
set -euo pipefail

AMQP_HOST=127.0.0.1
AMQP_PORT=5672
AMQP_VHOST=solstice-test
PG_HOST=127.0.0.1
PG_PORT=5432
PG_VERSION=15
PG_CLUSTER=main
PG_USER=solstice
PG_PASSWORD=solstice
PG_DB=solstice_test
TIMEOUT=${SOLSTICE_SERVICES_TIMEOUT:-120}

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # description, command...
    local what=$1; shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die "$what did not answer within ${TIMEOUT}s"
        fi
        sleep 0.5
    done
}

apt_busy() { pgrep -x apt >/dev/null || pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

install_missing() {
    local missing=()
    for pkg in rabbitmq-server postgresql; do
        installed "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    if apt_busy; then
        log "waiting for a running apt/dpkg to finish"
        wait_for "apt" bash -c '! { pgrep -x apt || pgrep -x apt-get || pgrep -x dpkg; } >/dev/null'
    fi
    for pkg in "${missing[@]}"; do
        installed "$pkg" && continue
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || {
            apt-get update -q >&2
            apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
        }
        break
    done
}

start_rabbitmq() {
    if port_open "$AMQP_HOST" "$AMQP_PORT"; then
        return 0
    fi
    if ! pgrep -u rabbitmq -f 'beam.*rabbit' >/dev/null; then
        log "starting rabbitmq-server"
        # The Debian wrapper switches to the rabbitmq user when run as root.
        rabbitmq-server -detached >&2
    else
        log "rabbitmq-server is booting"
    fi
    wait_for "RabbitMQ on $AMQP_HOST:$AMQP_PORT" port_open "$AMQP_HOST" "$AMQP_PORT"
}

# The tests' vhost, with the guest user allowed everything in it.
ensure_vhost() {
    if [[ ${SOLSTICE_SERVICES_FRESH_VHOST:-0} == 1 ]]; then
        log "emptying RabbitMQ vhost $AMQP_VHOST"
        rabbitmqctl -q delete_vhost "$AMQP_VHOST" >/dev/null 2>&1 || true
    fi
    if ! rabbitmqctl -q list_vhosts name 2>/dev/null | grep -qx "$AMQP_VHOST"; then
        rabbitmqctl -q add_vhost "$AMQP_VHOST" >&2
        rabbitmqctl -q set_permissions -p "$AMQP_VHOST" guest '.*' '.*' '.*' >&2
    fi
}

pg_psql() { su postgres -c "psql -p $PG_PORT -v ON_ERROR_STOP=1 -qtAX $(printf '%q ' "$@")"; }

start_postgres() {
    if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
        if [[ ! -d /etc/postgresql/$PG_VERSION/$PG_CLUSTER ]]; then
            log "creating PostgreSQL cluster $PG_VERSION/$PG_CLUSTER"
            pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >&2
        fi
        log "starting PostgreSQL $PG_VERSION/$PG_CLUSTER"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2 || true
        wait_for "PostgreSQL on $PG_HOST:$PG_PORT" pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
    fi
    # Role and database, created once.
    if [[ "$(pg_psql -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]]; then
        log "creating role $PG_USER"
        pg_psql -c "CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
    fi
    if [[ "$(pg_psql -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
        log "creating database $PG_DB"
        pg_psql -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
    fi
}

install_missing
start_rabbitmq
ensure_vhost
start_postgres

echo "export SOLSTICE_TEST_AMQP_URL=amqp://guest:guest@$AMQP_HOST:$AMQP_PORT/$AMQP_VHOST"
echo "export SOLSTICE_TEST_POSTGRES_URL=postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$PG_DB"
echo "export SOLSTICE_TEST_AMQP_RESTART='rabbitmqctl -q stop_app && rabbitmqctl -q start_app'"
log "RabbitMQ and PostgreSQL are up"
