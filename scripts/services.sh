#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer, and prints `export` lines for their URLs.
#
# Uses ITS__POSTGRES__URL / ITS__REDIS__URL (default: the standard local ports). When nothing
# answers there, starts project-local instances from the system packages on their own ports, with
# data under .local/ (git-ignored), and points the URLs at them. Usage: eval "$(scripts/services.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOCAL=$ROOT/.local
PG_URL=${ITS__POSTGRES__URL:-postgres://postgres@127.0.0.1:5432/its}
REDIS_URL=${ITS__REDIS__URL:-redis://127.0.0.1:6379}
LOCAL_PG_PORT=55432
LOCAL_REDIS_PORT=56379

say() { printf '\033[1m[services]\033[0m %s\n' "$*" >&2; }
answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
# A server that answers but refuses us (a packaged PostgreSQL asking for a password) is no use:
# probe by logging in to its maintenance database.
pg_usable() { timeout 5 psql -w "${1%/*}/postgres" -Atqc 'select 1' >/dev/null 2>&1; }

if ! pg_usable "$PG_URL"; then
  PG_URL="postgres://postgres@127.0.0.1:$LOCAL_PG_PORT/its"
  if ! answers 127.0.0.1 $LOCAL_PG_PORT; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    mkdir -p "$LOCAL"
    as_pg=(); [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
    if [ ! -s "$LOCAL/pg/PG_VERSION" ]; then
      say "initialising a local PostgreSQL in .local/pg"
      mkdir -p "$LOCAL/pg"; [ "$(id -u)" -eq 0 ] && chown postgres: "$LOCAL/pg"
      "${as_pg[@]}" "$bin/initdb" -D "$LOCAL/pg" -U postgres --auth=trust >"$LOCAL/initdb.log"
    fi
    say "starting local PostgreSQL on 127.0.0.1:$LOCAL_PG_PORT"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$LOCAL/pg"
    "${as_pg[@]}" "$bin/pg_ctl" -D "$LOCAL/pg" -l "$LOCAL/pg/server.log" -w -o "-p $LOCAL_PG_PORT -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
  fi
fi

if ! timeout 5 redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; then
  REDIS_URL="redis://127.0.0.1:$LOCAL_REDIS_PORT"
  if ! answers 127.0.0.1 $LOCAL_REDIS_PORT; then
    say "starting local Redis on 127.0.0.1:$LOCAL_REDIS_PORT"
    mkdir -p "$LOCAL/redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port $LOCAL_REDIS_PORT --dir "$LOCAL/redis" \
      --logfile "$LOCAL/redis/redis.log" --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do answers 127.0.0.1 $LOCAL_REDIS_PORT && break; sleep 0.1; done
  fi
fi

echo "export ITS__POSTGRES__URL='$PG_URL'"
echo "export ITS__REDIS__URL='$REDIS_URL'"
