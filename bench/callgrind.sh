#!/usr/bin/env bash
# Count user-space instructions per request under valgrind's callgrind: repeatable to the
# last digit for the same binary and load, whatever else the machine is doing, so a change
# of a few hundred instructions per request can be judged without a noisy timing run.
#
#   bench/callgrind.sh                                  steady against steady-all (access log + spans at 1%)
#   TARGETS=steady,haproxy bench/callgrind.sh           steady against haproxy
#   REQUESTS=50000 CONNS=64 bench/callgrind.sh
#   DUMP_INSTR=1 bench/callgrind.sh                     keep per-instruction counts too
#   NO_KEEPALIVE=1 bench/callgrind.sh                   a new connection per request
#   RATE=400 REQUESTS=4000 bench/callgrind.sh           an open loop: each request finds the proxy idle
#
# Kernel time (the loopback TCP stack) is not counted: compare with bench/run.sh's CPU
# µs/request for the whole cost. Profiles are kept in bench/results/callgrind-TARGET.out
# (`callgrind_annotate --inclusive=yes FILE | head -60`).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tools valgrind
build_steady
raise_nofile
make_workdir
run_orchestrator callgrind
