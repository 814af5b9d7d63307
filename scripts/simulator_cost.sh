#!/usr/bin/env bash
# What N simulated cameras cost one service process: its resident memory and CPU (docs/PERFORMANCE.md).
#
#   scripts/simulator_cost.sh CAMERAS [FPS] [CROSSINGS_PER_MIN] [SECONDS]
#
# Starts the release binary with the simulator on (auth off, a database and Redis prefix of its
# own), registers CAMERAS sim:// cameras, waits 20 s, then samples the process for SECONDS (60):
# CPU as cores (user + system time over wall time), VmRSS and RssAnon (private memory: libtorch's
# shared libraries make most of VmRSS and are shared between processes) and threads at the end,
# events published per second. Needs PostgreSQL and Redis (ITS_BENCH_POSTGRES_URL, ITS_BENCH_REDIS_URL).
set -euo pipefail
cameras=${1:?cameras}
fps=${2:-1}
rate=${3:-30}
seconds=${4:-60}
pg=${ITS_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
redis=${ITS_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
binary=${ITS_BINARY:-target/release/its-analytics}
name="its_simcost_$$"
port=$((20000 + $$ % 20000))
work=$(mktemp -d)

psql -q "$pg/postgres" -c "CREATE DATABASE $name"
cleanup() {
    [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
    redis-cli -u "$redis" --scan --pattern "$name:*" | xargs -r -n 500 redis-cli -u "$redis" DEL >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ITS__SIMULATOR__ENABLED=true ITS__AUTH__ENABLED=false \
ITS__RATE_LIMIT__PER_SECOND=100000 ITS__RATE_LIMIT__BURST=100000 \
ITS__HTTP__BIND="127.0.0.1:$port" ITS__POSTGRES__URL="$pg/$name" ITS__REDIS__URL="$redis" \
ITS__REDIS__KEY_PREFIX="$name" ITS__OUTBOX__PATH="$work/outbox.redb" RUST_LOG=warn \
    "$binary" serve 2>"$work/log" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.2; done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
anon_kib() { awk '/^RssAnon/ {print $2}' "/proc/$pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
published() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^its_events_published_total/ {s += $2} END {print s + 0}'; }
idle_rss=$(rss_kib)
idle_anon=$(anon_kib)

geometry='{"lines":[{"id":"l1","a":[0,180],"b":[640,180]}]}'
seq -w 0 $((cameras - 1)) | xargs -P 8 -I{} curl -sf -o /dev/null -X POST "http://127.0.0.1:$port/api/v1/cameras" \
    -H 'content-type: application/json' \
    -d "{\"id\":\"sim-{}\",\"url\":\"sim://sim-{}?crossings_per_min=$rate\",\"fps\":$fps,\"geometry\":$geometry}"
sleep 20

hz=$(getconf CLK_TCK)
t0=$(date +%s.%N); c0=$(cpu_ticks); e0=$(published)
sleep "$seconds"
t1=$(date +%s.%N); c1=$(cpu_ticks); e1=$(published)
rss=$(rss_kib)
anon=$(anon_kib)
threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
dropped=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^its_frames_dropped_total/ {s += $2} END {print s + 0}')
awk -v n="$cameras" -v c0="$c0" -v c1="$c1" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v e0="$e0" -v e1="$e1" \
    -v rss="$rss" -v idle="$idle_rss" -v anon="$anon" -v idle_anon="$idle_anon" -v th="$threads" -v dr="$dropped" 'BEGIN {
    wall = t1 - t0; cores = (c1 - c0) / hz / wall
    printf "cameras %d: cpu %.3f cores (%.1f ms/s per 1000 cameras), rss %.0f MiB (idle %.0f), anonymous %.0f MiB " \
        "(idle %.0f; %.1f KiB/camera), threads %d, events %.1f/s, frames dropped %d\n", n, cores,
        cores * 1000 * 1000 / n, rss / 1024, idle / 1024, anon / 1024, idle_anon / 1024, (anon - idle_anon) / n, th,
        (e1 - e0) / wall, dr
}'
