#!/usr/bin/env bash
# Count wake-ups per request in the closed loop (wrk, CONNS connections), for each proxy
# behind the same nginx backend, pinned as bench/run.sh pins them: how often the proxy
# is preempted (the backend shares its core), how often the backend and wrk go to sleep
# and must be woken, and the CPU of the proxy and the backend. A proxy that writes each
# message as soon as it has it wakes its peers more often, and pays for every wake-up
# in system time (see "Why the waits" in bench/README.md).
#
#   bench/switches.sh                                   steady, haproxy and nginx
#   TARGETS=steady,steady-base STEADY_BASE_BIN=/tmp/old bench/switches.sh
#   ROUNDS=5 DURATION=5s bench/switches.sh
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tools time
build_steady
raise_nofile
make_workdir
run_orchestrator switches
