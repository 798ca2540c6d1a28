#!/usr/bin/env python3
"""Hold N idle HTTP/1.1 keep-alive client connections open against a proxy and
report the proxy's memory while they are held.

Each connection sends one `GET /` with keep-alive, reads the full response, then
stays open and idle. Once all are established and answered, the script waits
HOLD seconds and reads VmRSS and VmHWM (peak RSS) of the given PIDs from
/proc/PID/status, summing over the PIDs (e.g. nginx master + worker).

Prints one JSON object on stdout. Only connects to 127.0.0.1 (or the --host
given, which run by bench.py is always loopback). Bounded: every phase has a
timeout, and all connections are closed at the end.

Usage: idle_conns.py --port P --conns 10000 --pids 123,124 [--hold 3]
"""

import argparse
import asyncio
import json
import resource
import sys
import time


def read_mem_kb(pids):
    """Sum VmRSS / VmHWM (KiB) over pids; missing processes count as 0."""
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except FileNotFoundError:
            pass
    return rss, hwm


async def read_response(reader):
    """Read one HTTP/1.1 response with Content-Length or chunked body. Returns status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    chunked = False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def open_one(host, port, request, sem, timeout):
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(request)
        await writer.drain()
        status = await asyncio.wait_for(read_response(reader), timeout)
        return reader, writer, status


async def main_async(args):
    pids = [int(p) for p in args.pids.split(",") if p]
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "User-Agent: steady-bench-idle\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    result = {"conns_wanted": args.conns, "pids": pids}
    result["rss_before_kb"], result["hwm_before_kb"] = read_mem_kb(pids)

    sem = asyncio.Semaphore(args.parallel)
    t0 = time.monotonic()
    tasks = [
        asyncio.create_task(open_one(args.host, args.port, request, sem, args.timeout))
        for _ in range(args.conns)
    ]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    conns = [d for d in done if not isinstance(d, BaseException)]
    errors = [d for d in done if isinstance(d, BaseException)]
    result["connect_seconds"] = round(time.monotonic() - t0, 3)
    result["opened"] = len(conns)
    result["responses_2xx"] = sum(1 for _, _, s in conns if 200 <= s < 300)
    result["errors"] = len(errors)
    if errors:
        result["first_error"] = repr(errors[0])

    await asyncio.sleep(args.hold)
    result["rss_held_kb"], result["hwm_held_kb"] = read_mem_kb(pids)
    # A connection the proxy closed while idle shows as EOF on our side.
    result["still_open"] = sum(1 for r, _, _ in conns if not r.at_eof())

    for _, w, _ in conns:
        w.close()
    await asyncio.sleep(0.2)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--pids", required=True, help="comma-separated PIDs whose memory to sum")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds to hold before sampling")
    ap.add_argument("--parallel", type=int, default=256, help="connections being set up at once")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-connection setup timeout (s)")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("idle_conns.py only targets loopback")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 256
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            print(f"warning: RLIMIT_NOFILE hard limit {hard} < {want}", file=sys.stderr)

    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
