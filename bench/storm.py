#!/usr/bin/env python3
"""Boot storm load generator (open loop), used by bench/run.py.

N never-seen devices arrive evenly spread over WINDOW seconds; each opens a new connection,
asks for its configuration once (Connection: close) and is done on a 200. A 503 is retried
after its Retry-After (capped at 10 s), a refused or failed connection after 1 s; any other
status counts as a failed device. Devices not served DEADLINE seconds after the first arrival
are reported as unserved. Even devices are innovaphone (`/update.php?type=IP232&sn=..`), odd
ones Yealink T46S (`/<mac>.cfg` with the phone's User-Agent).

Prints one JSON object: statuses, request latency percentiles (connect to last byte),
device completion times (arrival to its 200), served/unserved counts.
"""

import argparse
import asyncio
import json
import resource
import time


def device_request(i, host):
    if i % 2 == 0:
        n = 0x400000 + i
        sn = "00-90-33-{:02x}-{:02x}-{:02x}".format((n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)
        path = f"/update.php?type=IP232&sn={sn}&hwid=IP232-{sn[9:]}&ip=10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        ua = "innovaphone-IP232/137640"
    else:
        mac = "001565{:06x}".format(0x800000 + i)
        path = f"/{mac}.cfg"
        ua = f"Yealink SIP-T46S 66.86.0.15 {mac}"
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\n"
            f"Connection: close\r\n\r\n").encode()


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


async def run(a):
    loop = asyncio.get_running_loop()
    host = f"{a.host}:{a.port}"
    sem = asyncio.Semaphore(a.max_open)
    statuses = {}
    latencies = []
    completion = []
    conn_errors = 0
    failed = 0
    t0 = loop.time()
    deadline = t0 + a.deadline

    async def device(i, arrived):
        nonlocal conn_errors, failed
        req = device_request(i, host)
        while True:
            if loop.time() > deadline:
                return
            async with sem:
                start = loop.time()
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(a.host, a.port), max(0.1, deadline - start))
                    writer.write(req)
                    data = await asyncio.wait_for(reader.read(-1), max(0.1, deadline - loop.time()))
                    writer.close()
                except (OSError, asyncio.TimeoutError):
                    conn_errors += 1
                    data = None
                end = loop.time()
            if data is None:
                await asyncio.sleep(1)
                continue
            try:
                status = int(data[9:12])
            except ValueError:
                status = 0
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(end - start)
            if status == 200:
                completion.append(end - arrived)
                return
            if status == 503:
                head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
                wait = 1.0
                for line in head.split("\r\n"):
                    if line.startswith("retry-after:"):
                        try:
                            wait = float(line.split(":", 1)[1])
                        except ValueError:
                            pass
                await asyncio.sleep(min(max(wait, 0.1), 10))
                continue
            failed += 1
            return

    tasks = []
    interval = a.window / a.devices
    i = 0
    while i < a.devices:
        now = loop.time()
        due = min(a.devices, int((now - t0) / interval) + 1)
        while i < due:
            tasks.append(asyncio.ensure_future(device(i, t0 + i * interval)))
            i += 1
        await asyncio.sleep(0.005)
    arrived_by = loop.time() - t0
    await asyncio.gather(*tasks)
    finished = loop.time() - t0
    served = len(completion)
    return {
        "devices": a.devices,
        "window_s": a.window,
        "deadline_s": a.deadline,
        "arrivals_took_s": round(arrived_by, 1),
        "finished_s": round(finished, 1),
        "served": served,
        "unserved": a.devices - served - failed,
        "failed": failed,
        "conn_errors": conn_errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "requests": sum(statuses.values()),
        "non200": sum(v for k, v in statuses.items() if k != 200),
        "req_p50_ms": round(pct(latencies, 50) * 1000, 1) if latencies else None,
        "req_p99_ms": round(pct(latencies, 99) * 1000, 1) if latencies else None,
        "done_p50_s": round(pct(completion, 50), 2) if completion else None,
        "done_p99_s": round(pct(completion, 99), 2) if completion else None,
        "done_max_s": round(max(completion), 2) if completion else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--devices", type=int, default=100000)
    ap.add_argument("--window", type=float, default=60)
    ap.add_argument("--deadline", type=float, default=120)
    ap.add_argument("--max-open", type=int, default=2000, help="connections open at once")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    a.max_open = min(a.max_open, hard - 100)
    print(json.dumps(asyncio.run(run(a))))


if __name__ == "__main__":
    main()
