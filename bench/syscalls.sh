#!/usr/bin/env bash
# Count system calls per request, by call, for each proxy behind the same nginx backend:
# strace -c attaches after a warm-up, for REQUESTS keep-alive requests from oha. The
# kernel half of the CPU per request (bench/run.sh) follows the calls made: this shows
# which ones a proxy makes and how many.
#
#   bench/syscalls.sh                                   steady, haproxy and nginx
#   TARGETS=steady,steady-all bench/syscalls.sh
#   REQUESTS=50000 CONNS=64 bench/syscalls.sh
#   SYSCALL_RATE=5000 bench/syscalls.sh                 at a constant rate (oha -q) instead of flat out
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tools strace
build_steady
raise_nofile
make_workdir
run_orchestrator syscalls
