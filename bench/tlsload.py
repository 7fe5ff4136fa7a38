#!/usr/bin/env python3
"""HTTPS load with a full TLS handshake per request (R3 of bench/run.py).

wrk resumes TLS sessions when it reconnects (nginx logs them as reused), so it cannot measure
a handshake per request. Here every request opens a new TCP connection and a new TLS session
(Python's ssl never resumes unless given a session), sends one GET with Connection: close for
the next device path of the list and reads the answer to EOF. PROCESSES x THREADS requests are
in flight at once; the handshake itself runs in OpenSSL without the GIL.

Prints one JSON object: requests, rps, p50/p99 (ms), statuses, errors.
"""

import argparse
import json
import multiprocessing
import socket
import ssl
import threading
import time


def worker(args, paths, offset, out):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    lat, statuses, errors = [], {}, 0
    stop = time.monotonic() + args.duration
    i = offset
    while True:
        t0 = time.monotonic()
        if t0 >= stop:
            break
        path = paths[i % len(paths)]
        i += 1
        req = (f"GET {path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
               f"Connection: close\r\n\r\n").encode()
        try:
            with socket.create_connection((args.host, args.port), timeout=30) as raw:
                with ctx.wrap_socket(raw, server_hostname=args.host) as s:
                    s.sendall(req)
                    chunks = []
                    while True:
                        b = s.recv(65536)
                        if not b:
                            break
                        chunks.append(b)
            data = b"".join(chunks)
            status = int(data[9:12])
        except (OSError, ValueError, ssl.SSLError):
            errors += 1
            continue
        lat.append(time.monotonic() - t0)
        statuses[status] = statuses.get(status, 0) + 1
    out.put((lat, statuses, errors))


def process(args, paths, pidx, q):
    results = []
    lock = threading.Lock()

    class Sink:
        def put(self, r):
            with lock:
                results.append(r)

    sink = Sink()
    threads = [threading.Thread(target=worker, args=(args, paths, (pidx * args.threads + t) * 7919, sink))
               for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat, statuses, errors = [], {}, 0
    for l, s, e in results:
        lat += l
        errors += e
        for k, v in s.items():
            statuses[k] = statuses.get(k, 0) + v
    q.put((lat, statuses, errors))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--paths", required=True, help="file with one path per line (first field)")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32, help="per process")
    args = ap.parse_args()
    paths = [line.split("\t")[0] for line in open(args.paths).read().splitlines() if line]
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=process, args=(args, paths, p, q)) for p in range(args.processes)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    lat, statuses, errors = [], {}, 0
    for _ in procs:
        l, s, e = q.get()
        lat += l
        errors += e
        for k, v in s.items():
            statuses[k] = statuses.get(k, 0) + v
    for p in procs:
        p.join()
    elapsed = time.monotonic() - t0
    lat.sort()

    def pct(p):
        return f"{lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000:.2f}ms" if lat else None
    print(json.dumps({
        "requests": len(lat),
        "rps": len(lat) / elapsed,
        "p50": pct(50),
        "p99": pct(99),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "non2xx": sum(v for k, v in statuses.items() if not 200 <= k < 300),
        "sockerr": errors,
        "mbps": 0.0,
    }))


if __name__ == "__main__":
    main()
