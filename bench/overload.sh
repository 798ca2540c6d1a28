#!/usr/bin/env bash
# Overload benchmark (issue 5): steady in front of a fixed-capacity backend, offered a
# multiple of that capacity open-loop, without protection and with adaptive concurrency.
#
#   bench/overload.sh                          defaults: 10 workers x 20 ms = 500 req/s, 10x for 10 s (~1 min)
#   CAPACITY=10 SERVICE_MS=20 MULTIPLIER=10 DURATION=10s bench/overload.sh
#   RUNS=baseline,adaptive CONCURRENCY='{queue_size: 4}' bench/overload.sh
#
# Other knobs: BASELINE_PCT (30), BASELINE_DURATION (5s), TIMEOUT (route timeout, 1s),
# CLIENT_TIMEOUT (TIMEOUT + 1s), CRITICAL_PCT (5), CONCURRENCY (YAML flow map, {}),
# RUNS (baseline,none,adaptive,priority), SETTLE (1s), WARMUP (2s of baseline-rate traffic
# before each spike, not counted), GEN_WORKERS (1), SKIP_BUILD=1,
# STEADY_BIN, LOADGEN_CPU (0), SERVER_CPU (1), RESULTS_DIR (bench/results). See bench/README.md.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
cd "$REPO_DIR"

say() { printf '[overload] %s\n' "$*" >&2; }

if [ "${SKIP_BUILD:-0}" = 0 ]; then
    say "cargo build --release -p steady"
    cargo build --release -p steady >&2
    say "cargo build --release -p steady-testkit --example overload"
    cargo build --release -p steady-testkit --example overload >&2
fi

EXAMPLE="$REPO_DIR/target/release/examples/overload"
export STEADY_BIN="${STEADY_BIN:-$REPO_DIR/target/release/steady}"
for bin in "$EXAMPLE" "$STEADY_BIN"; do
    [ -x "$bin" ] || { say "missing $bin (run without SKIP_BUILD=1)"; exit 1; }
done

# The no-protection run holds about rate x timeout connections open in steady (two
# sockets each), so take every descriptor the hard limit allows.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true

# Load generator on one CPU, steady and the backend on another, as bench/run.sh does.
LOADGEN_CPU="${LOADGEN_CPU-0}"
export SERVER_CPU="${SERVER_CPU-1}"
pin=()
if [ -n "$LOADGEN_CPU" ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin=(taskset -c "$LOADGEN_CPU")
else
    SERVER_CPU=""
fi

WORKDIR="$(mktemp -d /tmp/steady-overload.XXXXXX)"
export WORKDIR
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
mkdir -p "$RESULTS_DIR"
stamp="$(date -u +%Y%m%d-%H%M%S)"
out="$RESULTS_DIR/overload-$stamp.md"

child=""
cleanup() {
    # The example stops steady and the backend itself on SIGTERM; give it a moment.
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$child" 2>/dev/null || true
    fi
    rm -rf "$WORKDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "capacity ${CAPACITY:-10} x ${SERVICE_MS:-20} ms, ${MULTIPLIER:-10}x for ${DURATION:-10s}; results in $out"
# Hard bound on the whole run, whatever the knobs say.
"${pin[@]}" timeout --signal=TERM --kill-after=10 600 "$EXAMPLE" run >"$out" &
child=$!
rc=0
wait "$child" || rc=$?
child=""
{
    printf '\n`'
    env | grep -E '^(CAPACITY|SERVICE_MS|MULTIPLIER|DURATION|BASELINE_PCT|BASELINE_DURATION|TIMEOUT|CLIENT_TIMEOUT|CRITICAL_PCT|CONCURRENCY|RUNS)=' | sort | tr '\n' ' ' || true
    printf 'bench/overload.sh` at commit %s, %s UTC, nproc %s\n' \
        "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(date -u '+%Y-%m-%d %H:%M')" "$(nproc)"
} >>"$out"
cat "$out"
cp "$out" "$RESULTS_DIR/overload-latest.md"
exit "$rc"
