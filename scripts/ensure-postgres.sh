#!/usr/bin/env bash
# Make a local PostgreSQL server available for the tests and print its URL on stdout.
# Uses a running server; else, as root, installs Debian's postgresql and starts a cluster.
set -euo pipefail
URL="postgresql+psycopg://shuyu:shuyu@127.0.0.1:5432/shuyu"
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then :; else
  if [ "$(id -u)" != 0 ]; then
    echo "no PostgreSQL on 127.0.0.1:5432 and not root: start one, or run the tests as root" >&2
    exit 1
  fi
  if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  fi
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  if ! pg_lsclusters -h 2>/dev/null | grep -q "^$ver main"; then
    pg_createcluster "$ver" main >&2
  fi
  pg_ctlcluster "$ver" main start >&2 || true
  for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
if [ "$(id -u)" = 0 ]; then
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='shuyu'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE shuyu LOGIN SUPERUSER PASSWORD 'shuyu'\"" >&2
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='shuyu'\"" | grep -q 1 ||
    su postgres -c "createdb -O shuyu shuyu" >&2
fi
echo "$URL"
