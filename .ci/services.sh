#!/usr/bin/env bash
# Make sure the services the tests and the batch path need are reachable on localhost:
# Redis (6379), PostgreSQL (5432, trust auth, database "test") and, for browser tests, Chromium.
# Already running: nothing is done. Installed but stopped: started. Missing: installed from Debian.
set -euo pipefail

need_apt=()
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! port_open 6379 && ! command -v redis-server >/dev/null; then need_apt+=(redis-server); fi
if ! port_open 5432 && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then need_apt+=(postgresql); fi
if [ "${NEED_CHROMIUM:-1}" = 1 ] && ! command -v chromium >/dev/null; then need_apt+=(chromium); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! port_open 6379; then
  echo "starting redis-server on 127.0.0.1:6379"
  mkdir -p /tmp/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/redis \
    --logfile /tmp/redis/redis.log
fi

if ! port_open 5432; then
  echo "starting PostgreSQL on 127.0.0.1:5432"
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    as_root pg_createcluster "$version" main >/dev/null
  fi
  conf=/etc/postgresql/$version/main
  # Local trust auth, as on the development machines; these databases hold only test data.
  as_root sed -i -E 's/^(local|host)(\s+all\s+all\s+.*)\s(peer|scram-sha-256|md5)$/\1\2 trust/' "$conf/pg_hba.conf"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi

for _ in $(seq 1 30); do port_open 5432 && port_open 6379 && break; sleep 1; done
if command -v psql >/dev/null; then
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
fi
port_open 6379 && echo "redis: up" || { echo "redis: NOT reachable"; exit 1; }
port_open 5432 && echo "postgres: up" || { echo "postgres: NOT reachable"; exit 1; }
