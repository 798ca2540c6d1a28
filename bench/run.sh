#!/usr/bin/env bash
# Benchmark steady against the backend direct, nginx and haproxy.
#
#   bench/run.sh                 full run (~8 min: 5 rounds x 4 targets x (wrk + oha) x 10s)
#   QUICK=1 bench/run.sh         ~1 min smoke run (1 round, 3s phases, 2,000 idle conns)
#   ROUNDS=3 DURATION=10s RATE=5000 CONNS=64 bench/run.sh
#
# Other knobs: IDLE_CONNS (10000), IDLE_HOLD (3s), WARMUP (2s), SETTLE (1, seconds between runs),
# LATENCY_CONNS (=CONNS), TARGETS (direct,steady,nginx,haproxy), SKIP_BUILD=1, SKIP_IDLE=1,
# SKIP_WRK=1 (latency rounds only: many oha rounds, to judge the added p99 round by round),
# STEADY_BIN, LOADGEN_CPU (0), SERVER_CPU (1), RESULTS_DIR (bench/results), KEEP_WORKDIR=1.
# See bench/README.md.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tools
build_steady
raise_nofile
make_workdir
say "workdir $WORKDIR"
run_orchestrator run
