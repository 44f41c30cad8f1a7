#!/usr/bin/env bash
# The HTTP API's load check (docs/http.md): starts `cosee-edge serve --http 127.0.0.1:0` on the shipped model, runs
# the http_load example against it (CLIENTS clients on their own keep-alive connections, REQUESTS requests each, the
# committed SST-2 dev sentences in turn), reads the server's memory, stops it with SIGTERM and checks that it exits
# cleanly. Fails if any request went unanswered or got a wrong answer. A measurement, not a test: on a shared
# machine the numbers move from run to run.
#
#   scripts/http-load.sh [CLIENTS] [REQUESTS] [-- extra `serve` flags, e.g. --workers 1]
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-8}"
requests="${2:-2000}"
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = "--" ] && shift
target_dir="${CARGO_TARGET_DIR:-target}"

# The test command's build (scripts/test.sh): a no-op after the tests, and the same features (see check-aarch64.sh).
LIBTORCH="$(scripts/setup-libtorch.sh)"
export LIBTORCH
cargo build --release -q --workspace --all-targets
bin="$target_dir/release/cosee-edge"
load="$target_dir/release/examples/http_load"

log="$(mktemp)"
"$bin" serve --model models/sst2-minilm-l6 --http 127.0.0.1:0 "$@" 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
for _ in $(seq 300); do
  addr="$(sed -n 's|^cosee-edge serve: listening on http://||p' "$log")"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "http-load: the server exited"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "http-load: the server did not listen"; exit 1; }
rss_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
idle="$(rss_kb VmRSS)"
echo "http-load: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), server $addr, RSS ${idle} kB idle"
status=0
"$load" --addr "$addr" --data tests/data/sst2-dev-40.tsv --clients "$clients" --requests "$requests" || status=$?
echo "http-load: server RSS ${idle} kB idle, $(rss_kb VmRSS) kB after the load, peak $(rss_kb VmHWM) kB"
kill -TERM "$pid"
served=0
wait "$pid" || served=$?
trap 'rm -f "$log"' EXIT
if [ "$served" != 0 ] || ! grep -q "stopped; every request in flight was answered" "$log"; then
  cat "$log"
  echo "http-load: the server did not stop cleanly on SIGTERM (exit $served)"
  exit 1
fi
echo "http-load: SIGTERM: the server stopped cleanly"
exit "$status"
