#!/usr/bin/env python3
"""steady benchmark orchestrator (called by bench/run.sh and bench/profile.sh).

Compares, in one run and interleaved round by round, a fixed nginx backend
hit directly, steady, nginx as a keep-alive reverse proxy and haproxy
(http mode, http-reuse always). See bench/README.md for the method.

Everything it starts is pinned with taskset, listens on 127.0.0.1 only, runs
from generated configs in a temp dir and is killed on exit. Every load phase
is bounded in time. Standard library only.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------
# knobs (environment)


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_seconds(name, default):
    """Accept '10', '10s', '2m'."""
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    m = re.fullmatch(r"(\d+)\s*(s|m)?", v)
    if not m:
        sys.exit(f"{name}={v!r}: expected seconds like 10 or 10s or 1m")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


class Knobs:
    def __init__(self):
        self.quick = os.environ.get("QUICK", "0") not in ("", "0", "false", "no")
        q = self.quick
        self.rounds = env_int("ROUNDS", 1 if q else 5)
        self.duration = env_seconds("DURATION", 3 if q else 10)
        self.rate = env_int("RATE", 5000)
        self.conns = env_int("CONNS", 64)
        self.latency_conns = env_int("LATENCY_CONNS", self.conns)
        self.idle_conns = env_int("IDLE_CONNS", 2000 if q else 10000)
        self.idle_hold = env_seconds("IDLE_HOLD", 2 if q else 3)
        self.warmup = env_seconds("WARMUP", 1 if q else 2)
        self.settle = float(os.environ.get("SETTLE", "0.5" if q else "1"))
        self.loadgen_cpu = os.environ.get("LOADGEN_CPU", "0")
        self.server_cpu = os.environ.get("SERVER_CPU", "1")
        self.steady_bin = os.environ.get("STEADY_BIN", os.path.join(ROOT, "target/release/steady"))
        self.steady_start_timeout = env_seconds("STEADY_START_TIMEOUT", 10)
        self.targets = os.environ.get("TARGETS", "direct,steady,nginx,haproxy").split(",")
        self.skip_idle = os.environ.get("SKIP_IDLE", "0") not in ("", "0")
        # Latency only: no closed-loop (wrk) phase in the rounds, so many more oha rounds
        # fit in the same time (to judge a p99 against the rounds' own spread).
        self.skip_wrk = os.environ.get("SKIP_WRK", "0") not in ("", "0")
        self.results_dir = os.environ.get("RESULTS_DIR", os.path.join(HERE, "results"))
        self.nofile = env_int("NOFILE", 20000)

    def describe(self):
        return (
            f"ROUNDS={self.rounds} DURATION={self.duration}s RATE={self.rate} CONNS={self.conns} "
            f"IDLE_CONNS={self.idle_conns} WARMUP={self.warmup}s QUICK={int(self.quick)} "
            f"{'SKIP_WRK=1 (latency rounds only) ' if self.skip_wrk else ''}"
            f"loadgen CPU {self.loadgen_cpu}, backend+proxy CPU {self.server_cpu}"
        )


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# processes


class Procs:
    """Starts pinned processes in their own process groups and kills them all on exit.

    Every started PID is appended to WORKDIR/pids so that run.sh's trap can
    kill leftovers even if this script is killed hard.
    """

    def __init__(self, workdir):
        self.workdir = workdir
        self.live = []
        self.pidfile = os.path.join(workdir, "pids")

    def start(self, name, argv, cpu):
        logpath = os.path.join(self.workdir, f"{name}.log")
        logf = open(logpath, "ab")
        p = subprocess.Popen(
            ["taskset", "-c", str(cpu)] + argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.workdir,
        )
        logf.close()
        p.bench_name = name
        p.bench_log = logpath
        self.live.append(p)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop(self, p, timeout=5.0):
        if p in self.live:
            self.live.remove(p)
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        # nginx workers share the group; make sure nothing of it survives.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_all(self):
        for p in list(self.live):
            self.stop(p)


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def cpu_split(pids):
    """(utime, stime) in clock ticks summed over pids; whole thread group per pid."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rfind(")") + 2 :].split()
        # after the comm field: state is fields[0]; utime/stime are stat fields 14/15
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def cpu_ticks(pids):
    """utime+stime (clock ticks) summed over pids; whole thread group per pid."""
    return sum(cpu_split(pids))


def core_ticks(cpu):
    """(busy, total) jiffies of one CPU from /proc/stat, or None if cpu is not a single index."""
    if not str(cpu).isdigit():
        return None
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle + iowait
                total = sum(v[:8])  # without guest (already in user)
                return (total - idle, total)
    return None


def tcp_active_opens():
    """System-wide count of connect()s (Tcp ActiveOpens in /proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def start_otlp_sink():
    """A local OTLP/HTTP receiver that accepts and discards `POST /v1/traces` (the
    `steady-trace` target's collector); returns its endpoint."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get_status(port, timeout=1.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def wait_ready(proc, port, timeout):
    """Wait until proc is alive and `GET /` on port answers 200. Returns error text or None."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with code {proc.returncode}"
        try:
            st = http_get_status(port)
            if st == 200:
                return None
            last = f"GET / answered {st}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    return f"not ready after {timeout}s ({last})"


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# configs


def nginx_common(workdir, name, nofile):
    wc = max(1024, nofile - 64)
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.error.log warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections {wc};
    use epoll;
}}
"""


def nginx_http_common(workdir, name):
    return f"""
    access_log off;
    default_type text/plain;
    server_tokens off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {workdir}/{name}-tmp/body;
    proxy_temp_path {workdir}/{name}-tmp/proxy;
"""


def backend_conf(workdir, port, nofile):
    return nginx_common(workdir, "backend", nofile) + f"""
http {{
{nginx_http_common(workdir, "backend")}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            return 200 "ok\\n";
        }}
    }}
}}
"""


def nginx_proxy_conf(workdir, port, backend_port, nofile):
    return nginx_common(workdir, "nginx", nofile) + f"""
http {{
{nginx_http_common(workdir, "nginx")}
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_conf(port, backend_port, maxconn, nofile):
    # haproxy sizes fds as 2*maxconn, more than a container may allow (hard limit 20000
    # here); idle client connections need one fd each, so cap ulimit-n at what we have
    # and let it start anyway (`no strict-limits` turns the fatal check into an alert).
    return f"""
global
    nbthread 1
    maxconn {maxconn}
    ulimit-n {nofile}
    no strict-limits

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    timeout http-request 60s

frontend fe
    bind 127.0.0.1:{port}
    maxconn {maxconn}
    default_backend be

backend be
    server s1 127.0.0.1:{backend_port}
"""


def steady_conf(port, admin_port, backend_port, access_log=None, otlp=None):
    """steady's config; with `access_log` (a file path) every request is also logged;
    with `otlp` (an OTLP/HTTP endpoint) spans are exported at 1% sampling."""
    log = f"access_log: {{path: {access_log}}}\n" if access_log else ""
    if otlp:
        log += f"tracing: {{otlp: {{endpoint: \"{otlp}\", protocol: http}}, sample: 1%}}\n"
    return log + f"""runtime:
  workers: 1
admin:
  bind: 127.0.0.1:{admin_port}
listeners:
  - name: web
    bind: 127.0.0.1:{port}
    protocol: http
routes:
  - name: all
    listener: web
    upstream: backend
upstreams:
  - name: backend
    balance: round-robin
    endpoints:
      - address: 127.0.0.1:{backend_port}
"""


# ---------------------------------------------------------------------------
# the servers


class Server:
    """One process tree under test (or the backend)."""

    def __init__(self, key, label, port):
        self.key = key
        self.label = label
        self.port = port
        self.proc = None

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid] + children_of(self.proc.pid)


class Bench:
    def __init__(self, knobs, workdir):
        self.k = knobs
        self.workdir = workdir
        self.procs = Procs(workdir)
        self.warnings = []
        self.skipped = {}
        self.versions = {}
        # argv prefix for the proxies (callgrind mode runs them under valgrind)
        self.wrap = []

    # -- starting -------------------------------------------------------
    def write(self, name, text):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_backend(self):
        port = free_port()
        os.makedirs(os.path.join(self.workdir, "backend-tmp"), exist_ok=True)
        cfg = self.write("backend.conf", backend_conf(self.workdir, port, self.k.nofile))
        s = Server("backend", "backend", port)
        s.proc = self.procs.start(
            "backend", ["nginx", "-p", self.workdir, "-e", f"{self.workdir}/backend.error.log", "-c", cfg], self.k.server_cpu
        )
        err = wait_ready(s.proc, port, 10)
        if err:
            sys.exit(f"backend nginx failed to start: {err}\n{tail(s.proc.bench_log)}{tail(self.workdir + '/backend.error.log')}")
        self.backend = s
        return s

    def start_proxy(self, key):
        """Start proxy `key`; returns Server or None (and records why) if it cannot run."""
        bp = self.backend.port
        port = free_port()
        if key == "nginx":
            os.makedirs(os.path.join(self.workdir, "nginx-tmp"), exist_ok=True)
            conf = nginx_proxy_conf(self.workdir, port, bp, self.k.nofile)
            if self.wrap:
                # Under valgrind (callgrind mode) nginx must serve from the process started.
                conf = conf.replace("master_process on;", "master_process off;")
            cfg = self.write("nginx.conf", conf)
            argv = ["nginx", "-p", self.workdir, "-e", f"{self.workdir}/nginx.error.log", "-c", cfg]
            label, timeout = "nginx", 10
        elif key == "haproxy":
            maxconn = max(1000, self.k.idle_conns + 1000)
            cfg = self.write("haproxy.cfg", haproxy_conf(port, bp, maxconn, self.k.nofile))
            argv = ["haproxy", "-db", "-f", cfg]
            label, timeout = "haproxy", 10
        elif key in STEADY_KEYS:
            # steady-base: another build of steady (STEADY_BASE_BIN, say the last commit's)
            # with steady's config, to compare two builds in one interleaved run.
            binary = os.environ.get("STEADY_BASE_BIN", "") if key == "steady-base" else self.k.steady_bin
            if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
                self.skipped[key] = f"binary {binary!r} not found (build failed, not built yet, or STEADY_BASE_BIN unset)"
                return None
            admin = free_port()
            while admin == port:
                admin = free_port()
            # steady-obs: the same binary with the JSON access log on (to a file), to
            # measure what observability costs per request.
            # In a directory of its own, as in a deployment (/var/log/steady): steady
            # watches its config file's directory for changes.
            access_log = os.path.join(self.workdir, "logs", f"{key}-access.log") if key in ("steady-obs", "steady-all") else None
            # steady-trace: span export at 1% to a local OTLP/HTTP sink.
            # steady-all: both (issue 4's "everything on" against steady with all off).
            otlp = start_otlp_sink() if key in ("steady-trace", "steady-all") else None
            cfg = self.write(f"{key}.yaml", steady_conf(port, admin, bp, access_log, otlp))
            argv = [binary, "serve", "-c", cfg]
            label, timeout = key, self.k.steady_start_timeout
        else:
            raise ValueError(key)
        s = Server(key, label, port)
        s.proc = self.procs.start(key, self.wrap + argv, self.k.server_cpu)
        err = wait_ready(s.proc, port, timeout)
        if err:
            text = tail(s.proc.bench_log)
            self.procs.stop(s.proc)
            if key in STEADY_KEYS:
                self.skipped[key] = f"`steady serve` did not come up: {err}"
                log(f"SKIPPING steady: {err}; last log lines:\n{text}")
                return None
            sys.exit(f"{key} failed to start: {err}\n{text}{tail(self.workdir + '/' + key + '.error.log')}")
        return s

    # -- load generators -------------------------------------------------
    def run_wrk(self, port, duration, conns):
        cmd = [
            "taskset", "-c", self.k.loadgen_cpu,
            "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
            f"http://127.0.0.1:{port}/",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
        text = out.stdout + out.stderr
        m_req = re.search(r"(\d+) requests in", text)
        m_rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
        if out.returncode != 0 or not m_req or not m_rps:
            raise RuntimeError(f"wrk failed (rc={out.returncode}):\n{text}")
        errs = 0
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        if m:
            errs += int(m.group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        if m:
            errs += sum(int(x) for x in m.groups())
        return {"requests": int(m_req.group(1)), "rps": float(m_rps.group(1)), "errors": errs, "raw": text}

    def run_oha(self, port, duration):
        cmd = [
            "taskset", "-c", self.k.loadgen_cpu,
            "oha", "-z", f"{duration}s", "-q", str(self.k.rate), "-c", str(self.k.latency_conns),
            "--latency-correction", "--no-tui", "--output-format", "json",
            f"http://127.0.0.1:{port}/",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        if out.returncode != 0:
            raise RuntimeError(f"oha failed (rc={out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        j = json.loads(out.stdout)
        lp = j["latencyPercentiles"]
        codes = j.get("statusCodeDistribution", {}) or {}
        ok = sum(v for c, v in codes.items() if str(c).startswith("2"))
        total = sum(codes.values())
        # requests still in flight when -z runs out are cut off by oha itself: not errors
        errs = sum(v for e, v in (j.get("errorDistribution") or {}).items() if "deadline" not in e) + (total - ok)
        return {
            "p50_us": lp["p50"] * 1e6,
            "p99_us": lp["p99"] * 1e6,
            "p999_us": lp["p99.9"] * 1e6,
            "rps": j["summary"]["requestsPerSec"],
            "requests": total,
            "errors": errs,
        }

    def measure(self, srv, fn):
        """Run fn() while counting CPU of srv (proxy), of the backend and of the server core."""
        ppids = srv.pids() if srv.key != "backend" else []
        bpids = self.backend.pids()
        o0 = tcp_active_opens()
        s0, b0, c0, t0 = cpu_split(ppids), cpu_ticks(bpids), core_ticks(self.k.server_cpu), time.monotonic()
        r = fn()
        s1, b1, c1, t1 = cpu_split(ppids), cpu_ticks(bpids), core_ticks(self.k.server_cpu), time.monotonic()
        p0, p1 = sum(s0), sum(s1)
        # connections opened during the run (client + proxy->backend); far above ~2x the
        # client connections means the proxy is not reusing backend connections
        r["tcp_connects"] = tcp_active_opens() - o0
        n = max(1, r["requests"])
        tick_us = 1e6 / CLK_TCK
        r["proxy_cpu_us_per_req"] = (p1 - p0) * tick_us / n if ppids else None
        # the user-space and kernel halves (ticks of 10 ms: rough over a short run)
        r["proxy_user_us_per_req"] = (s1[0] - s0[0]) * tick_us / n if ppids else None
        r["proxy_sys_us_per_req"] = (s1[1] - s0[1]) * tick_us / n if ppids else None
        r["backend_cpu_us_per_req"] = (b1 - b0) * tick_us / n
        # share of the server core that was busy (user+sys+irq+softirq), to see saturation
        if c0 and c1 and c1[1] > c0[1]:
            r["server_core_busy"] = (c1[0] - c0[0]) / (c1[1] - c0[1])
        r["wall_s"] = t1 - t0
        return r

    # -- phases -----------------------------------------------------------
    def run(self):
        k = self.k
        log(k.describe())
        self.versions = tool_versions(k)
        self.preflight()
        self.start_backend()
        log(f"backend nginx on 127.0.0.1:{self.backend.port} (pids {self.backend.pids()})")

        servers = {}
        for key in k.targets:
            if key == "direct":
                servers[key] = self.backend
                continue
            s = self.start_proxy(key)
            if s:
                servers[key] = s
                log(f"{key} on 127.0.0.1:{s.port} (pids {s.pids()})")
        order = [t for t in k.targets if t in servers]
        self.order = order
        all_order = [t for t in k.targets]

        log("warm-up")
        for key in order:
            self.run_wrk(servers[key].port, k.warmup, k.conns)
        time.sleep(k.settle)

        rounds = []
        for r in range(k.rounds):
            rec = {key: {} for key in order}
            for key in ([] if k.skip_wrk else order):
                log(f"round {r + 1}/{k.rounds}: wrk  -> {key}")
                rec.setdefault(key, {})["wrk"] = self.guarded(key, lambda: self.measure(servers[key], lambda: self.run_wrk(servers[key].port, k.duration, k.conns)))
                time.sleep(k.settle)
            for key in order:
                log(f"round {r + 1}/{k.rounds}: oha  -> {key} at {k.rate}/s")
                rec[key]["oha"] = self.guarded(key, lambda: self.measure(servers[key], lambda: self.run_oha(servers[key].port, k.duration)))
                time.sleep(k.settle)
            rounds.append(rec)
            self.summarize_round(r, rec)

        idle = {}
        if not k.skip_idle:
            for key in order:
                if key == "direct":
                    continue
                # fresh process, so VmHWM reflects startup + idle connections only
                self.procs.stop(servers[key].proc)
                time.sleep(k.settle)
                s = self.start_proxy(key)
                if not s:
                    continue
                servers[key] = s
                time.sleep(0.5)
                log(f"idle: {k.idle_conns} keep-alive connections -> {key}")
                idle[key] = self.run_idle(s)
                self.procs.stop(s.proc)
        self.procs.stop_all()
        return rounds, idle, all_order

    def preflight(self):
        """Warn when the machine is not idle before we start (other builds, etc.)."""
        cpus = [str(self.k.loadgen_cpu), str(self.k.server_cpu)]
        a = {c: core_ticks(c) for c in cpus}
        time.sleep(1.0)
        busy = {}
        for c in cpus:
            b = core_ticks(c)
            if a[c] and b and b[1] > a[c][1]:
                busy[c] = (b[0] - a[c][0]) / (b[1] - a[c][1])
        self.idle_check = busy
        hot = {c: v for c, v in busy.items() if v > 0.10}
        if hot:
            top = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
            names = ", ".join(" ".join(l.split()[1:]) for l in top.splitlines()[1:4])
            msg = ("machine not idle before the run: " + ", ".join(f"CPU {c} {v:.0%} busy" for c, v in hot.items())
                   + f" (top: {names}); numbers will be noisy")
            self.warnings.append(msg)
            log("WARNING " + msg)

    def guarded(self, key, fn):
        try:
            return fn()
        except Exception as e:  # one failing run must not lose the whole benchmark
            self.warnings.append(f"{key}: {e}")
            log(f"ERROR {key}: {e}")
            return None

    def run_idle(self, s):
        pids = s.pids()
        cmd = [
            "taskset", "-c", self.k.loadgen_cpu, sys.executable, os.path.join(HERE, "idle_conns.py"),
            "--port", str(s.port), "--conns", str(self.k.idle_conns),
            "--pids", ",".join(map(str, pids)), "--hold", str(self.k.idle_hold),
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            r = json.loads(out.stdout.strip().splitlines()[-1])
        except Exception as e:
            self.warnings.append(f"{s.key} idle test failed: {e}")
            return None
        if r["opened"] < self.k.idle_conns or r["still_open"] < r["opened"] or r["responses_2xx"] < r["opened"]:
            self.warnings.append(
                f"{s.key} idle: opened {r['opened']}/{self.k.idle_conns}, 2xx {r['responses_2xx']}, "
                f"still open after hold {r['still_open']} ({r.get('first_error', '')})"
            )
        log(
            f"  {s.key}: RSS {r['rss_before_kb']}->{r['rss_held_kb']} KiB, VmHWM {r['hwm_held_kb']} KiB, "
            f"open {r['still_open']}/{r['opened']}, connect {r['connect_seconds']}s"
        )
        return r

    def summarize_round(self, r, rec):
        parts = []
        for key, v in rec.items():
            w, o = v.get("wrk"), v.get("oha")
            s = f"{key}: "
            s += f"{w['rps']:.0f} rps" if w else ("no wrk" if self.k.skip_wrk else "wrk failed")
            s += f", p99 {o['p99_us']:.0f}us" if o else ", oha failed"
            parts.append(s)
        log(f"round {r + 1} done: " + "; ".join(parts))


# ---------------------------------------------------------------------------
# report


def tool_versions(k):
    def first(cmd):
        try:
            o = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (o.stdout + o.stderr).strip().splitlines()[0]
        except Exception:
            return "?"

    try:
        built = datetime.datetime.fromtimestamp(os.path.getmtime(k.steady_bin), datetime.timezone.utc)
        steady = f"{first([k.steady_bin, '--version'])}, binary built {built:%Y-%m-%d %H:%M} UTC"
    except OSError:
        steady = "no binary"
    return {
        "steady": steady,
        "nginx": first(["nginx", "-v"]),
        "haproxy": first(["haproxy", "-v"]),
        "wrk": first(["wrk", "-v"]),
        "oha": first(["oha", "--version"]),
        "repo": first(["git", "-C", ROOT, "log", "-1", "--format=%h %s"]),
    }


def machine_info():
    model = "?"
    try:
        o = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", o)
        model = m.group(1).strip() if m else "?"
    except Exception:
        pass
    return {
        "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
    }


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def fmt(x, digits=0):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b <= 0 or a < 0:
        return "n/a"
    return f"{a / b:.2f}x"


def aggregate(rounds, idle, order):
    agg = {}
    for key in order:
        w = [r.get(key, {}).get("wrk") for r in rounds]
        o = [r.get(key, {}).get("oha") for r in rounds]
        w = [x for x in w if x]
        o = [x for x in o if x]
        i = idle.get(key)
        a = {
            "rps": med([x["rps"] for x in w]),
            "rps_min": min([x["rps"] for x in w], default=None),
            "rps_max": max([x["rps"] for x in w], default=None),
            "cpu": med([x["proxy_cpu_us_per_req"] for x in w]),
            "cpu_rate": med([x["proxy_cpu_us_per_req"] for x in o]),
            "cpu_user": med([x.get("proxy_user_us_per_req") for x in w]),
            "cpu_sys": med([x.get("proxy_sys_us_per_req") for x in w]),
            "backend_cpu": med([x["backend_cpu_us_per_req"] for x in w]),
            "core_busy": med([x.get("server_core_busy") for x in w]),
            "connects": med([x.get("tcp_connects") for x in w]),
            "p50": med([x["p50_us"] for x in o]),
            "p99": med([x["p99_us"] for x in o]),
            "p99_min": min([x["p99_us"] for x in o], default=None),
            "p99_max": max([x["p99_us"] for x in o], default=None),
            "p999": med([x["p999_us"] for x in o]),
            "oha_rps": med([x["rps"] for x in o]),
            "errors": sum(x["errors"] for x in w) + sum(x["errors"] for x in o),
            "n": len(w),
        }
        if i:
            a["hwm_mib"] = i["hwm_held_kb"] / 1024
            a["rss_held_mib"] = i["rss_held_kb"] / 1024
            a["kib_per_conn"] = (i["rss_held_kb"] - i["rss_before_kb"]) / max(1, i["opened"])
        agg[key] = a
    if "direct" in agg and agg["direct"]["p99"] is not None:
        for key, a in agg.items():
            if key != "direct" and a["p99"] is not None:
                a["added_p99"] = a["p99"] - agg["direct"]["p99"]
    return agg


STEADY_KEYS = ("steady", "steady-obs", "steady-trace", "steady-all", "steady-base")

LABELS = {
    "direct": "direct (backend)",
    "steady": "steady",
    "nginx": "nginx (proxy)",
    "haproxy": "haproxy",
    "steady-obs": "steady + access log",
    "steady-trace": "steady + OTLP spans at 1%",
    "steady-all": "steady + access log + OTLP spans at 1%",
    "steady-base": "steady, base build (STEADY_BASE_BIN)",
}


def render(knobs, bench, rounds, idle, order, all_order, info):
    agg = aggregate(rounds, idle, order)
    L = []
    L.append("# steady benchmark")
    L.append("")
    L.append(f"- date: {info['date']}")
    L.append(f"- machine: {info['nproc']} CPUs, {info['cpu']}, kernel {info['kernel']}")
    L.append(f"- settings: {knobs.describe()}")
    L.append(f"- tools: {'; '.join(f'{k}: {v}' for k, v in bench.versions.items())}")
    L.append("")
    L.append(f"Medians over {knobs.rounds} interleaved round(s). rps: wrk closed loop, 1 thread, "
             f"{knobs.conns} conns. CPU: proxy utime+stime per request during the wrk run "
             f"(and during the {knobs.rate}/s run). Latency: oha at {knobs.rate} req/s, "
             f"{knobs.latency_conns} conns, coordinated-omission corrected. RSS: VmHWM with "
             f"{knobs.idle_conns} idle keep-alive client connections held.")
    L.append("")
    hdr = ["target", "req/s", "CPU µs/req", f"CPU µs/req @{knobs.rate}/s", "p50 µs", "p99 µs",
           "p99.9 µs", "added p99 µs", "peak RSS MiB", "KiB/idle conn", "errors"]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    for key in all_order:
        if key not in agg:
            reason = bench.skipped.get(key, "not run")
            L.append(f"| {LABELS.get(key, key)} | skipped: {reason} |" + " |" * (len(hdr) - 2))
            continue
        a = agg[key]
        L.append("| " + " | ".join([
            LABELS.get(key, key),
            fmt(a["rps"]),
            fmt(a["cpu"], 2),
            fmt(a["cpu_rate"], 2),
            fmt(a["p50"]),
            fmt(a["p99"]),
            fmt(a["p999"]),
            fmt(a.get("added_p99")),
            fmt(a.get("hwm_mib"), 1),
            fmt(a.get("kib_per_conn"), 2),
            str(a["errors"]),
        ]) + " |")
    L.append("")
    # ratios
    if "steady" in agg:
        L.append("Ratios (steady / peer). req/s: higher is better; all others: lower is better.")
        L.append("")
        rh = ["ratio", "req/s", "CPU µs/req", f"CPU µs/req @{knobs.rate}/s", "p50", "p99", "p99.9",
              "added p99", "peak RSS", "KiB/idle conn"]
        L.append("| " + " | ".join(rh) + " |")
        L.append("|" + "---|" * len(rh))
        for num, peer in (("steady", "nginx"), ("steady", "haproxy"), ("steady-obs", "steady"),
                          ("steady-trace", "steady"), ("steady-all", "steady"), ("steady", "steady-base")):
            if peer not in agg or num not in agg:
                continue
            s, p = agg[num], agg[peer]
            L.append("| " + " | ".join([
                f"{num}/{peer}",
                ratio(s["rps"], p["rps"]),
                ratio(s["cpu"], p["cpu"]),
                ratio(s["cpu_rate"], p["cpu_rate"]),
                ratio(s["p50"], p["p50"]),
                ratio(s["p99"], p["p99"]),
                ratio(s["p999"], p["p999"]),
                ratio(s.get("added_p99"), p.get("added_p99")),
                ratio(s.get("hwm_mib"), p.get("hwm_mib")),
                ratio(s.get("kib_per_conn"), p.get("kib_per_conn")),
            ]) + " |")
        L.append("")
        # the same CPU ratios round by round: the spread says how far to trust a median
        L.append("CPU µs/req ratio in each round (closed loop; at the constant rate):")
        L.append("")
        for num, peer in (("steady", "haproxy"), ("steady", "nginx"), ("steady-all", "steady"),
                          ("steady", "steady-base")):
            per = {}
            for mode in ("wrk", "oha"):
                per[mode] = [r[num][mode]["proxy_cpu_us_per_req"] / r[peer][mode]["proxy_cpu_us_per_req"]
                             for r in rounds
                             if r.get(num, {}).get(mode) and r.get(peer, {}).get(mode)
                             and r[peer][mode].get("proxy_cpu_us_per_req")]
            if per["wrk"] or per["oha"]:
                L.append(f"- {num}/{peer}: " + " ".join(f"{x:.2f}" for x in per["wrk"]) + "; "
                         + " ".join(f"{x:.2f}" for x in per["oha"]))
        L.append("")
        # the added p99 round by round, each against the same round's direct p99: how often
        # steady's is at or below the peer's says more than one median of a noisy tail
        def added(r, key):
            d, v = r.get("direct", {}).get("oha"), r.get(key, {}).get("oha")
            return v["p99_us"] - d["p99_us"] if d and v else None

        lines = []
        for peer in ("haproxy", "nginx", "steady-base"):
            pairs = [(added(r, "steady"), added(r, peer)) for r in rounds]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if pairs:
                at_or_below = sum(1 for a, b in pairs if a <= b)
                diffs = [a - b for a, b in pairs]
                lines.append(f"- steady vs {peer}: at or below in {at_or_below} of {len(pairs)} rounds; "
                             f"median difference {med(diffs):+.0f} µs; per round (steady - {peer}): "
                             + " ".join(f"{x:+.0f}" for x in diffs))
        if lines:
            L.append("Added p99 at the constant rate in each round (each against the same round's direct p99):")
            L.append("")
            L.extend(lines)
            L.append("")
    else:
        L.append(f"Ratios: n/a, steady was skipped ({bench.skipped.get('steady', 'not in TARGETS')}).")
        L.append("")
    # spread
    L.append("Spread across rounds (min - max), to judge noise:")
    L.append("")
    L.append("| target | req/s min | req/s max | p99 µs min | p99 µs max | CPU µs/req user + sys (wrk) | backend CPU µs/req | server core busy (wrk) | TCP connects per wrk run | oha achieved req/s |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for key in order:
        a = agg[key]
        L.append(f"| {LABELS.get(key, key)} | {fmt(a['rps_min'])} | {fmt(a['rps_max'])} | {fmt(a['p99_min'])} | "
                 f"{fmt(a['p99_max'])} | {fmt(a['cpu_user'], 1)} + {fmt(a['cpu_sys'], 1)} | {fmt(a['backend_cpu'], 2)} | "
                 f"{fmt(a['core_busy'] * 100 if a['core_busy'] is not None else None)}% | {fmt(a['connects'])} | {fmt(a['oha_rps'])} |")
    L.append("")
    if idle:
        L.append("Idle connections (fresh process each):")
        L.append("")
        L.append("| target | opened | still open | RSS before KiB | RSS held KiB | VmHWM KiB | connect s |")
        L.append("|---|---|---|---|---|---|---|")
        for key, i in idle.items():
            if i:
                L.append(f"| {LABELS.get(key, key)} | {i['opened']} | {i['still_open']} | {i['rss_before_kb']} | "
                         f"{i['rss_held_kb']} | {i['hwm_held_kb']} | {i['connect_seconds']} |")
        L.append("")
    warns = list(bench.warnings)
    for key, a in agg.items():
        if a["oha_rps"] is not None and a["oha_rps"] < 0.95 * knobs.rate:
            warns.append(f"{key}: oha achieved only {a['oha_rps']:.0f} req/s of {knobs.rate} (saturated or load generator limited)")
        if a["errors"]:
            warns.append(f"{key}: {a['errors']} errors/non-2xx responses across runs")
    for key, why in bench.skipped.items():
        warns.append(f"{key} skipped: {why}")
    if warns:
        L.append("Warnings:")
        L.append("")
        for w in warns:
            L.append(f"- {w}")
        L.append("")
    return "\n".join(L), agg


# ---------------------------------------------------------------------------
# profile mode


def profile(knobs, workdir):
    target = os.environ.get("TARGET", "steady")
    callgraph = os.environ.get("CALLGRAPH", "dwarf")
    freq = os.environ.get("FREQ", "499")
    b = Bench(knobs, workdir)
    try:
        profile_with(b, knobs, workdir, target, callgraph, freq)
    finally:
        b.procs.stop_all()


def profile_with(b, knobs, workdir, target, callgraph, freq):
    b.start_backend()
    s = b.start_proxy(target)
    if not s:
        sys.exit(f"cannot profile {target}: {b.skipped.get(target)}")
    log(f"{target} on 127.0.0.1:{s.port}, pids {s.pids()}; warm-up")
    b.run_wrk(s.port, knobs.warmup, knobs.conns)
    # workers only (for nginx the master does no request work)
    pids = s.pids()
    if target == "nginx":
        pids = children_of(s.proc.pid) or pids
    data = os.path.join(workdir, "perf.data")
    event = os.environ.get("PERF_EVENT", "")
    if not event:
        chk = subprocess.run(["perf", "stat", "-e", "cycles", "true"], capture_output=True, text=True)
        event = "cpu-clock" if "not supported" in (chk.stdout + chk.stderr) or chk.returncode else "cycles"
    rec = ["perf", "record", "-e", event, "-F", freq, "--call-graph", callgraph,
           "-p", ",".join(map(str, pids)), "-o", data, "--", "sleep", str(knobs.duration)]
    log("perf: " + " ".join(rec))
    perf = subprocess.Popen(rec, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(0.3)
    # PROFILE_OPEN=1: at the constant RATE (oha), as the "@RATE/s" column measures;
    # otherwise closed loop (wrk).
    if os.environ.get("PROFILE_OPEN") == "1":
        b.run_oha(s.port, knobs.duration)
        loadgen = f"oha: {knobs.rate} req/s"
    else:
        w = b.run_wrk(s.port, knobs.duration, knobs.conns)
        loadgen = f"wrk: {w['rps']:.0f} req/s, {w['errors']} errors"
    try:
        _, err = perf.communicate(timeout=knobs.duration + 60)
    except subprocess.TimeoutExpired:
        os.killpg(perf.pid, signal.SIGINT)
        _, err = perf.communicate()
    log(f"{loadgen}; perf: {err.strip().splitlines()[-1] if err.strip() else ''}")
    b.procs.stop_all()
    out_data = os.environ.get("PERF_OUT", os.path.join(knobs.results_dir, f"perf-{target}.data"))
    os.makedirs(os.path.dirname(out_data), exist_ok=True)
    shutil.copy(data, out_data)
    report = subprocess.run(
        ["perf", "report", "-i", out_data, "--no-children", "--percent-limit", "1", "--stdio", "-g", "none"],
        capture_output=True, text=True,
    )
    lines = report.stdout.splitlines()
    print("\n".join(lines[:60]))
    log(f"perf data kept at {out_data}; explore with: perf report -i {out_data}")


def oha_count(knobs, port, count, conns, rate=0):
    """Sends `count` keep-alive GETs with oha from the load generator's CPU (at `rate`
    per second when given, else as fast as they are answered; each on a connection of
    its own with NO_KEEPALIVE=1); returns the 2xx."""
    cmd = ["taskset", "-c", knobs.loadgen_cpu, "oha", "-n", str(count), "-c", str(conns),
           "--no-tui", "--output-format", "json", f"http://127.0.0.1:{port}/"]
    if rate:
        cmd[4:4] = ["-q", str(rate)]
    # NO_KEEPALIVE=1: a new connection for every request (what a connection costs)
    if os.environ.get("NO_KEEPALIVE") == "1":
        cmd[4:4] = ["--disable-keepalive"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    codes = json.loads(r.stdout).get("statusCodeDistribution", {}) or {}
    return sum(v for c, v in codes.items() if str(c).startswith("2"))


def start_warmed(b, knobs, key, n, conns):
    """Starts proxy `key` (exiting if it cannot run) and warms it with a tenth of the `n`
    measured requests: pools, lazy statics, allocator caches."""
    s = b.start_proxy(key)
    if not s:
        sys.exit(f"cannot run {key}: {b.skipped.get(key)}")
    oha_count(knobs, s.port, max(500, n // 10), conns)
    return s


# ---------------------------------------------------------------------------
# callgrind mode: user-space instructions per request, repeatable to the last digit


def callgrind(knobs, workdir):
    targets = os.environ.get("TARGETS", "steady,steady-all").split(",")
    n = env_int("REQUESTS", 20000)
    conns = env_int("CONNS", 32)
    # RATE=N: an open loop at N requests/s, so each request finds the proxy idle (what a
    # request costs at a constant rate below saturation: one wake-up or more for each).
    rate = env_int("RATE", 0)
    b = Bench(knobs, workdir)
    rows = []
    try:
        b.start_backend()
        for key in targets:
            if key not in STEADY_KEYS and key not in ("haproxy", "nginx"):
                sys.exit(f"callgrind mode measures steady variants, haproxy and nginx, not {key}")
            out = os.path.join(workdir, f"callgrind-{key}.out")
            # DUMP_INSTR=1 keeps per-instruction counts (for reading the hot assembly).
            instr = "yes" if os.environ.get("DUMP_INSTR") == "1" else "no"
            b.wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--dump-instr={instr}"]
            # CACHE_SIM=1 also simulates the caches (misses per request in the profile).
            if os.environ.get("CACHE_SIM") == "1":
                b.wrap.append("--cache-sim=yes")
            knobs.steady_start_timeout = max(knobs.steady_start_timeout, 60)
            s = start_warmed(b, knobs, key, n, conns)
            pid = s.proc.pid
            subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
            ok = oha_count(knobs, s.port, n, conns, rate)
            subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
            time.sleep(0.5)
            dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
            if not dumps:
                sys.exit(f"callgrind wrote no dump for {key}")
            ir = 0
            for line in open(dumps[-1]):
                if line.startswith("totals:") or line.startswith("summary:"):
                    ir = int(line.split()[1])
            kept = os.path.join(knobs.results_dir, f"callgrind-{key}.out")
            os.makedirs(knobs.results_dir, exist_ok=True)
            shutil.copy(dumps[-1], kept)
            rows.append((key, ok, ir / max(1, ok)))
            log(f"{key}: {ok} ok of {n}, {ir / max(1, ok):,.0f} instructions/request; profile: callgrind_annotate {kept}")
            b.procs.stop(s.proc)
    finally:
        b.procs.stop_all()
    base = rows[0][2]
    print(f"\n| target | 2xx | instructions/request | vs {rows[0][0]} |\n|---|---|---|---|")
    for key, ok, per in rows:
        print(f"| {key} | {ok} | {per:,.0f} | {per / base:.3f}x |")


# ---------------------------------------------------------------------------
# syscalls mode: system calls per request, by call (strace -c attached after warm-up)


def syscalls(knobs, workdir):
    targets = os.environ.get("TARGETS", "steady,haproxy,nginx").split(",")
    n = env_int("REQUESTS", 20000)
    conns = env_int("CONNS", 32)
    rate = env_int("SYSCALL_RATE", 0)
    b = Bench(knobs, workdir)
    tables = []
    try:
        b.start_backend()
        for key in targets:
            s = start_warmed(b, knobs, key, n, conns)
            out = os.path.join(workdir, f"strace-{key}.txt")
            # Every process of the proxy (nginx's workers are children of its master).
            pids = [str(s.proc.pid)] + subprocess.run(
                ["pgrep", "-P", str(s.proc.pid)], capture_output=True, text=True).stdout.split()
            tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out] + [a for p in pids for a in ("-p", p)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            ok = oha_count(knobs, s.port, n, conns, rate)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            calls = {}
            for line in open(out):
                f = line.split()
                if len(f) >= 5 and f[-1] != "total" and f[0][0].isdigit():
                    count = int(f[3])
                    calls[f[-1]] = count
            tables.append((key, ok, calls))
            log(f"{key}: {ok} ok of {n}, {sum(calls.values()) / max(1, ok):.2f} syscalls/request")
            b.procs.stop(s.proc)
    finally:
        b.procs.stop_all()
    names = sorted({c for _, _, calls in tables for c in calls},
                   key=lambda c: -max(calls.get(c, 0) / max(1, ok) for _, ok, calls in tables))
    print("\n| syscall | " + " | ".join(k for k, _, _ in tables) + " |")
    print("|---|" + "---|" * len(tables))
    print("| **all, per request** | " + " | ".join(f"{sum(c.values()) / max(1, ok):.2f}" for _, ok, c in tables) + " |")
    for name in names:
        per = [calls.get(name, 0) / max(1, ok) for _, ok, calls in tables]
        if max(per) >= 0.01:
            print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in per) + " |")


def ctx_switches(pids):
    """(voluntary, involuntary) context switches summed over every thread of pids."""
    vol = invol = 0
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            invol += int(line.split()[1])
            except OSError:
                pass
    return vol, invol


def switches(knobs, workdir):
    """Wake-ups per request in the closed loop: how often each proxy is preempted (its
    involuntary switches; the backend shares its core), how often the backend and the
    load generator go to sleep and must be woken (their voluntary switches), and the CPU
    of the proxy and the backend. All targets stay up; ROUNDS rounds, interleaved."""
    targets = os.environ.get("TARGETS", "steady,haproxy,nginx").split(",")
    b = Bench(knobs, workdir)
    rows = []
    try:
        backend = b.start_backend()
        servers = {}
        for key in targets:
            s = b.start_proxy(key)
            if s:
                servers[key] = s
                b.run_wrk(s.port, knobs.warmup, knobs.conns)
        for r in range(knobs.rounds):
            for key, s in servers.items():
                pids = children_of(s.proc.pid) or s.pids() if key == "nginx" else s.pids()
                bpids = backend.pids()
                p0, b0, x0, y0 = cpu_split(pids), cpu_split(bpids), ctx_switches(pids), ctx_switches(bpids)
                # wrk under GNU time, for its own context switches
                cmd = ["/usr/bin/time", "-f", "WRK %w %c", "taskset", "-c", knobs.loadgen_cpu, "wrk", "-t1",
                       f"-c{knobs.conns}", f"-d{knobs.duration}s", "--timeout", "5s", f"http://127.0.0.1:{s.port}/"]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=knobs.duration + 30)
                p1, b1, x1, y1 = cpu_split(pids), cpu_split(bpids), ctx_switches(pids), ctx_switches(bpids)
                n = int(re.search(r"(\d+) requests in", out.stdout).group(1))
                wrk = re.search(r"WRK (\d+) (\d+)", out.stderr)
                tick = 1e6 / CLK_TCK
                row = {
                    "target": key, "round": r + 1, "rps": n / knobs.duration,
                    "proxy_us": ((p1[0] - p0[0]) + (p1[1] - p0[1])) * tick / n,
                    "proxy_user_sys": ((p1[0] - p0[0]) * tick / n, (p1[1] - p0[1]) * tick / n),
                    "preempted": (x1[1] - x0[1]) / n,
                    "backend_us": ((b1[0] - b0[0]) + (b1[1] - b0[1])) * tick / n,
                    "backend_wakes": (y1[0] - y0[0]) / n,
                    "wrk_wakes": int(wrk.group(1)) / n if wrk else float("nan"),
                }
                rows.append(row)
                log(f"round {r + 1} {key}: {row['rps']:.0f} req/s, proxy {row['proxy_us']:.1f} us/req, "
                    f"preempted {row['preempted']:.3f}/req, backend woken {row['backend_wakes']:.3f}/req, "
                    f"wrk woken {row['wrk_wakes']:.3f}/req")
    finally:
        b.procs.stop_all()
    print("\n| target | req/s | proxy CPU µs/req (user + sys) | proxy preempted /req | backend CPU µs/req "
          "| backend woken /req | wrk woken /req |")
    print("|---|---|---|---|---|---|---|")
    for key in servers:
        mine = [x for x in rows if x["target"] == key]
        u = med([x["proxy_user_sys"][0] for x in mine])
        sy = med([x["proxy_user_sys"][1] for x in mine])
        print(f"| {key} | {med([x['rps'] for x in mine]):,.0f} | {med([x['proxy_us'] for x in mine]):.1f} "
              f"({u:.1f} + {sy:.1f}) | {med([x['preempted'] for x in mine]):.3f} | "
              f"{med([x['backend_us'] for x in mine]):.1f} | {med([x['backend_wakes'] for x in mine]):.3f} | "
              f"{med([x['wrk_wakes'] for x in mine]):.3f} |")


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="steady benchmark orchestrator (use bench/run.sh)")
    ap.add_argument("mode", choices=["run", "profile", "callgrind", "syscalls", "switches"])
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    knobs = Knobs()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    if args.mode == "profile":
        profile(knobs, args.workdir)
        return
    if args.mode == "callgrind":
        callgrind(knobs, args.workdir)
        return
    if args.mode == "syscalls":
        syscalls(knobs, args.workdir)
        return
    if args.mode == "switches":
        switches(knobs, args.workdir)
        return

    bench = Bench(knobs, args.workdir)
    try:
        info = machine_info()
        t0 = time.monotonic()
        rounds, idle, all_order = bench.run()
        md, agg = render(knobs, bench, rounds, idle, bench.order, all_order, info)
        md += f"\nTotal bench time: {time.monotonic() - t0:.0f}s\n"
    finally:
        bench.procs.stop_all()
    os.makedirs(knobs.results_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(knobs.results_dir, f"bench-{stamp}.md")
    with open(path, "w") as f:
        f.write(md)
    with open(os.path.join(knobs.results_dir, f"bench-{stamp}.json"), "w") as f:
        json.dump({"info": info, "knobs": vars(knobs), "versions": bench.versions, "rounds": strip_raw(rounds),
                   "idle": idle, "aggregate": agg, "skipped": bench.skipped, "warnings": bench.warnings}, f, indent=1)
    shutil.copy(path, os.path.join(knobs.results_dir, "latest.md"))
    print(md)
    log(f"written {path} (and latest.md, .json)")


def strip_raw(rounds):
    out = []
    for r in rounds:
        rr = {}
        for key, v in r.items():
            rr[key] = {ph: ({a: b for a, b in x.items() if a != "raw"} if x else None) for ph, x in v.items()}
        out.append(rr)
    return out


if __name__ == "__main__":
    main()
