#!/usr/bin/env bash
# Record a perf profile of steady (pinned to CPU 1) under a wrk load and print the top symbols.
#
#   bench/profile.sh                       profile steady for DURATION (10s)
#   TARGET=haproxy bench/profile.sh        profile a peer instead (nginx profiles its worker)
#   PROFILE_OPEN=1 bench/profile.sh        at the constant RATE (oha) instead of wrk's closed loop
#   CALLGRAPH=fp bench/profile.sh          frame-pointer stacks (needs RUSTFLAGS="-C force-frame-pointers=yes")
#
# Knobs: DURATION, CONNS, FREQ (499 Hz), PERF_EVENT (cycles if supported, else cpu-clock),
# PERF_OUT (bench/results/perf-TARGET.data), SKIP_BUILD=1, STEADY_BIN.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tools perf
if [ "${TARGET:-steady}" = steady ]; then build_steady; fi
raise_nofile
make_workdir
run_orchestrator profile
