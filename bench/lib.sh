# Shared setup for bench/run.sh and bench/profile.sh (sourced, not run).
# Installs missing tools, builds steady, raises the fd limit, makes a temp
# workdir and a trap that kills every process the bench started.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"

say() { printf '[bench] %s\n' "$*" >&2; }

APT_UPDATED=0
apt_install() {
    # apt_install PKG...: install Debian packages without starting their services.
    if [ "$(id -u)" != 0 ]; then
        say "need root to apt-get install $* (or install them yourself)"; exit 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq >&2 || true
        APT_UPDATED=1
    fi
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # keep postinst scripts from starting a system nginx/haproxy on :80
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
    local rc=$?
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    return $rc
}

ensure_tools() {
    # ensure_tools [perf|valgrind|strace|time]
    command -v taskset >/dev/null || apt_install util-linux
    command -v python3 >/dev/null || apt_install python3
    command -v nginx   >/dev/null || apt_install nginx-light || apt_install nginx
    command -v haproxy >/dev/null || apt_install haproxy
    command -v wrk     >/dev/null || apt_install wrk
    if [ "${1:-}" = perf ]; then
        command -v perf >/dev/null || apt_install linux-perf
    fi
    if [ "${1:-}" = valgrind ]; then
        command -v valgrind >/dev/null || apt_install valgrind
    fi
    if [ "${1:-}" = strace ]; then
        command -v strace >/dev/null || apt_install strace
    fi
    if [ "${1:-}" = time ]; then
        [ -x /usr/bin/time ] || apt_install time
    fi
    if ! command -v oha >/dev/null; then
        export PATH="$HOME/.cargo/bin:$PATH"
        if ! command -v oha >/dev/null; then
            say "installing oha (cargo install oha --locked) ..."
            cargo install oha --locked >&2
        fi
    fi
    for t in taskset python3 nginx haproxy wrk oha; do
        command -v "$t" >/dev/null || { say "missing tool: $t"; exit 1; }
    done
    if [ "$(nproc)" -lt 2 ]; then
        say "need at least 2 CPUs (load generator on CPU ${LOADGEN_CPU:-0}, servers on CPU ${SERVER_CPU:-1})"; exit 1
    fi
}

build_steady() {
    if [ "${SKIP_BUILD:-0}" != 0 ]; then
        say "SKIP_BUILD set: using existing ${STEADY_BIN:-$REPO_DIR/target/release/steady}"
        return 0
    fi
    say "cargo build --release -p steady"
    if ! (cd "$REPO_DIR" && cargo build --release -p steady >&2); then
        say "WARNING: release build failed; steady is benchmarked only if an older binary exists and runs"
    fi
}

raise_nofile() {
    # soft limit up to the hard limit (a container may forbid raising the hard one)
    local hard
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ]; then hard=1048576; fi
    ulimit -n "$hard" 2>/dev/null || true
    export NOFILE
    NOFILE=$(ulimit -n)
    local need=$(( ${IDLE_CONNS:-10000} + 1000 ))
    if [ "$NOFILE" -lt "$need" ]; then
        export IDLE_CONNS=$(( NOFILE - 1000 ))
        say "WARNING: open-file limit $NOFILE is too low; IDLE_CONNS lowered to $IDLE_CONNS"
    fi
}

BENCH_CHILD=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$BENCH_CHILD" ] && kill -0 "$BENCH_CHILD" 2>/dev/null; then
        kill -TERM "$BENCH_CHILD" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$BENCH_CHILD" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$BENCH_CHILD" 2>/dev/null
    fi
    # backstop: every process group the orchestrator started
    if [ -n "${WORKDIR:-}" ] && [ -f "$WORKDIR/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
        done < "$WORKDIR/pids"
    fi
    if [ -n "${WORKDIR:-}" ] && [ -d "$WORKDIR" ]; then
        if [ "$rc" != 0 ] || [ "${KEEP_WORKDIR:-0}" != 0 ]; then
            say "configs and logs kept in $WORKDIR"
        else
            rm -rf "$WORKDIR"
        fi
    fi
    exit "$rc"
}

make_workdir() {
    WORKDIR=$(mktemp -d /tmp/steady-bench.XXXXXX)
    export WORKDIR
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

run_orchestrator() {
    # run_orchestrator MODE: run bench.py in the background so the trap stays responsive
    python3 "$BENCH_DIR/bench.py" "$1" --workdir "$WORKDIR" &
    BENCH_CHILD=$!
    wait "$BENCH_CHILD"
    local rc=$?
    BENCH_CHILD=""
    return $rc
}
