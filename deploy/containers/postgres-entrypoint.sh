#!/bin/sh
# Start PostgreSQL; on the first start (an empty data directory) make the cluster, the user
# POSTGRES_USER with POSTGRES_PASSWORD and the database POSTGRES_DB, as the official image does.
# Clients on the network log in with a password (scram-sha-256); nothing is trusted by address.
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
data=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [ ! -s "$data/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD: the database listens on the network}"
    case "$user$database" in
        *[!a-z0-9_]*) echo "POSTGRES_USER and POSTGRES_DB: lower-case letters, digits, _" >&2
                      exit 2 ;;
    esac
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    "$bin/initdb" --pgdata="$data" --username="$user" --pwfile="$password_file" \
        --encoding=UTF8 --locale=C --auth-local=peer --auth-host=scram-sha-256 >&2
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$data/pg_hba.conf"
    if [ "$database" != postgres ]; then
        echo "CREATE DATABASE $database OWNER $user;" |
            "$bin/postgres" --single -D "$data" -j postgres > /dev/null
    fi
fi
exec "$bin/postgres" -D "$data" -c listen_addresses='*'
