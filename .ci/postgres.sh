#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the trace store tests and print its URL.
#
# Usage: .ci/postgres.sh [--dir DIR] [--port PORT] [--db NAME] [--stop]
#
#   --dir   folder for the cluster, socket, log and port file (default: $SPEC_AGENT_PG_DIR or
#           /tmp/spec-agent-pg)
#   --port  TCP port (default: $SPEC_AGENT_PG_PORT, else the port of a server already running
#           from DIR, else a free port)
#   --db    database to create (default: $SPEC_AGENT_PG_DB or spec_agent_test)
#   --stop  stop the server running from DIR and exit
#
# Running it again reuses the running server and the existing cluster. It installs Debian's
# postgresql package with apt-get when no PostgreSQL binaries are found. As root, the server runs
# as the `postgres` user, because PostgreSQL refuses to run as root. Authentication is `trust` on
# loopback only, so never point it at a folder shared with other users.
#
# The last line of stdout is `export SPEC_AGENT_TEST_POSTGRES_URL=postgresql+psycopg://...`, so
# `eval "$(.ci/postgres.sh | tail -n 1)"` sets the variable the test fixture reads.
set -euo pipefail

dir="${SPEC_AGENT_PG_DIR:-/tmp/spec-agent-pg}"
port="${SPEC_AGENT_PG_PORT:-}"
database="${SPEC_AGENT_PG_DB:-spec_agent_test}"
stop=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) dir="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --db) database="$2"; shift 2 ;;
        --stop) stop=1; shift ;;
        *) echo "postgres.sh: unknown argument '$1'; see the usage at the top of $0" >&2; exit 2 ;;
    esac
done

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$found" && -x "$found/pg_ctl" ]]; then
        echo "$found"
    fi
}

install_postgres() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)."
        log "Install the 'postgresql' package, or set SPEC_AGENT_TEST_POSTGRES_URL to a server."
        exit 1
    fi
    log "installing PostgreSQL with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

# Run a command as the server's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

bin="$(find_bin)"
if [[ -z "$bin" ]]; then
    install_postgres
    bin="$(find_bin)"
fi
data="$dir/data"

if [[ $stop -eq 1 ]]; then
    if [[ -f "$data/postmaster.pid" ]]; then
        as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >&2
    fi
    exit 0
fi

mkdir -p "$dir"
if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$dir"
fi
if ! as_owner test -w "$dir" -a -x "$dir"; then
    log "the server's owner cannot write to $dir; choose a --dir whose parent folders it can enter"
    exit 1
fi

if [[ ! -f "$data/PG_VERSION" ]]; then
    log "initialising a cluster in $data"
    as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
fi

if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    running_port="$(cat "$dir/port")"
    if [[ -n "$port" && "$port" != "$running_port" ]]; then
        log "a server already runs from $dir on port $running_port, not $port; stop it with --stop"
        exit 1
    fi
    port="$running_port"
    log "reusing the server on 127.0.0.1:$port"
else
    port="${port:-$(free_port)}"
    log "starting the server on 127.0.0.1:$port (log: $dir/server.log)"
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off" \
        start >&2 || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
fi

exists="$(as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$database'")"
if [[ "$exists" != "1" ]]; then
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$database"
    log "created database $database"
fi

echo "export SPEC_AGENT_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/$database"
