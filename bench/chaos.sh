#!/usr/bin/env bash
# Chaos benchmark (issue: integration tests and a bench/chaos script that prints figures):
# the real steady binary in front of three backends, one killed hard mid-run and restarted,
# a 500-er and a staller, every endpoint down. Prints a table of figures.
#
#   bench/chaos.sh                     build release, run every scenario (~15 s after the build)
#   SKIP_BUILD=1 bench/chaos.sh        reuse target/release/{steady,examples/chaos}
#   LOAD_WORKERS=8 STEADY_WORKERS=1 bench/chaos.sh
#
# Everything runs on 127.0.0.1; each scenario's load is bounded in requests and time, the
# whole run is killed after 120 s, and every process it starts is stopped when it exits
# (the example kills its steady children; this script kills the example). See
# bench/README.md ("Chaos").
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
cd "$REPO_DIR"

say() { printf '[chaos] %s\n' "$*" >&2; }

if [ "${SKIP_BUILD:-0}" = 0 ]; then
    say "cargo build --release -p steady"
    cargo build --release -p steady >&2
    say "cargo build --release -p steady-testkit --example chaos"
    cargo build --release -p steady-testkit --example chaos >&2
fi

EXAMPLE="$REPO_DIR/target/release/examples/chaos"
export STEADY_BIN="${STEADY_BIN:-$REPO_DIR/target/release/steady}"
for bin in "$EXAMPLE" "$STEADY_BIN"; do
    [ -x "$bin" ] || { say "missing $bin (run without SKIP_BUILD=1)"; exit 1; }
done

WORKDIR="$(mktemp -d /tmp/steady-chaos.XXXXXX)"
export WORKDIR
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
mkdir -p "$RESULTS_DIR"
out="$RESULTS_DIR/chaos-$(date -u +%Y%m%d-%H%M%S).md"

child=""
cleanup() {
    # The example stops steady and the backends itself on SIGINT; give it a moment.
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -INT "$child" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$child" 2>/dev/null || true
    fi
    # Backstop: a steady child left behind by a killed example, by the pid it recorded
    # (and only if that pid still runs a config from WORKDIR).
    for pidfile in "$WORKDIR"/*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if grep -qF "$WORKDIR/" "/proc/$pid/cmdline" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [ "${KEEP_WORKDIR:-0}" = 0 ]; then rm -rf "$WORKDIR"; else say "configs and logs in $WORKDIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "steady $STEADY_BIN; logs and configs in $WORKDIR; results in $out"
timeout --signal=INT --kill-after=10 120 "$EXAMPLE" >"$out" &
child=$!
rc=0
wait "$child" || rc=$?
child=""
{
    printf '\n`bench/chaos.sh` at commit %s, %s UTC, nproc %s\n' \
        "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(date -u '+%Y-%m-%d %H:%M')" "$(nproc)"
} >>"$out"
cat "$out"
cp "$out" "$RESULTS_DIR/chaos-latest.md"
exit "$rc"
