#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL cluster on 127.0.0.1 for the tests and print its
# SQLAlchemy URL. Installs Debian's PostgreSQL when it is missing. Trust auth, loopback only.
set -euo pipefail
dir=${PGTEST_DIR:-/tmp/llm_magic_pg}
port=${PGTEST_PORT:-54329}
url="postgresql+psycopg://postgres@127.0.0.1:${port}/postgres"

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "installing PostgreSQL (Debian)…" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  echo "$url"
  exit 0
fi

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "$bindir/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c max_connections=200" start >&2
echo "$url"
