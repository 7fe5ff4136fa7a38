#!/usr/bin/env python3
"""Instructions per request of autoprov, counted by valgrind's callgrind: an A/B measure that
repeats to about 1 % whatever else the machine does (the req/s of `run.py` move by ±20 % on
a shared VM from one minute to the next).

It counts the server's user-space instructions only (what the kernel spends on sockets and
files is not in it, nor is nginx), so it answers "did this change make a request cheaper"
and "what does a request spend its instructions on", not "how does autoprov compare with
nginx" (that is `run.py`).

One autoprov (release build) runs under callgrind on a fresh site like `run.py`'s; devices
are brought to their steady state first; then for each scenario a warm-up round, a dump, N
requests from one client, a pause for the write-behind to write what they queued (its
batches count), and a second dump. Scenarios (as in `run.py`):

  R1     innovaphone steady poll, keep-alive
  R2     the same, a new connection per request
  R4     Yealink <mac>.cfg with If-None-Match, answered 304
  R5     first contact of a never-seen innovaphone device
  FLOOR  a path nobody serves (404), keep-alive
  FLOORC the same, a new connection per request

With `--cpu` it runs the builds natively instead and reports the server's user and system
CPU time per request (from /proc, all threads) for the same requests from one client, one at
a time: CPU time, so it moves with the VM, but without a load generator competing for the
cores it repeats to ~10 %.

usage:
  python3 bench/instr.py                          # build, then every scenario
  python3 bench/instr.py --only R1,R4 --binary target/release/autoprov
  python3 bench/instr.py --baseline /tmp/old-autoprov   # A/B: both builds, same requests
  python3 bench/instr.py --keep                   # keep the callgrind files for
                                                  # callgrind_annotate (path printed)
  python3 bench/instr.py --cpu --only R1 --baseline /tmp/old-autoprov --requests 20000
"""
import argparse
import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as B  # noqa: E402  (the site, devices and helpers of the ratio benchmark)

SCENARIOS = ["R1", "R2", "R4", "R5", "FLOOR", "FLOORC"]
FRESH = {"R2", "FLOORC"}


class Client:
    """One HTTP/1.1 client; `fresh` requests open (and close) a connection of their own."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def get(self, path, headers, fresh=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.port) if fresh else self.conn
        if fresh:
            headers = dict(headers, Connection="close")
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        if fresh:
            conn.close()
        return r.status


def cpu_seconds(pid):
    """(user, system) CPU seconds of every thread of `pid` so far."""
    user = system = 0
    tick = os.sysconf("SC_CLK_TCK")
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        user += int(fields[11])
        system += int(fields[12])
    # Threads that ended count in the process's own totals (cutime is for children).
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return max(user, int(fields[11])) / tick, max(system, int(fields[12])) / tick


def measure(binary, scenarios, n, devices, keep, cpu=False):
    work = tempfile.mkdtemp(prefix="autoprov-instr-")
    site = os.path.join(work, "site")
    B.make_site(site, devices)
    port = B.free_port()
    out = os.path.join(work, "callgrind.out")
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
            binary, "serve", "--site", site, "--listen", f"127.0.0.1:{port}"]
    if cpu:
        argv = argv[argv.index(binary):]
    with open(os.path.join(work, "server.log"), "w") as log:
        proc = subprocess.Popen(argv, env=dict(os.environ, AUTOPROV_LOG="warn"),
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        B.wait_port(port, timeout=120)
        base = f"http://127.0.0.1:{port}"
        inno = [B.prepare_innovaphone(base, i) for i in range(devices)]
        yea = [B.prepare_yealink(base, i) for i in range(devices)]
        client = Client(port)

        def request(kind, k):
            if kind in ("R1", "R2"):
                return inno[k % devices][0], {}
            if kind == "R4":
                path, ua, _body, etag = yea[k % devices]
                return path, {"User-Agent": ua, "If-None-Match": etag}
            if kind == "R5":
                return "/update.php?" + B.device_query(1_000_000 + k), {}
            return "/nothing/here", {}

        def dump(label):
            subprocess.run(["callgrind_control", f"--dump={label}", str(proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            time.sleep(0.3)
            return sorted(glob.glob(out + ".*"), key=os.path.getmtime)[-1]

        time.sleep(1)
        result = {}
        for kind in scenarios:
            fresh = kind in FRESH
            # Warm-up: every device once (caches, clean copies), never-seen ones elsewhere.
            for k in range(max(200, devices)):
                client.get(*request(kind, k + 500_000 if kind == "R5" else k), fresh=fresh)
            if cpu:
                time.sleep(0.4)
                before = cpu_seconds(proc.pid)
                statuses = set()
                for k in range(n):
                    statuses.add(client.get(*request(kind, k), fresh=fresh))
                time.sleep(0.4)
                after = cpu_seconds(proc.pid)
                user, system = ((a - b) / n * 1e6 for a, b in zip(after, before))
                result[kind] = ((user, system), sorted(statuses), None)
                continue
            dump("before-" + kind)
            statuses = set()
            for k in range(n):
                statuses.add(client.get(*request(kind, k), fresh=fresh))
            time.sleep(0.4)  # the write-behind window (100 ms) and its batch
            text = open(dump(kind)).read()
            m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
            result[kind] = (int(m.group(1)) / n, sorted(statuses),
                            sorted(glob.glob(out + ".*"), key=os.path.getmtime)[-1])
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if keep:
            print(f"instr: callgrind files kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", help="the autoprov binary to measure (default: build one)")
    ap.add_argument("--baseline", help="a second binary, measured the same way, for an A/B table")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    ap.add_argument("--requests", type=int, default=1500, help="measured requests per scenario")
    ap.add_argument("--devices", type=int, default=300)
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files")
    ap.add_argument("--cpu", action="store_true",
                    help="native runs: user and system CPU µs per request instead of instructions")
    a = ap.parse_args()
    scenarios = [x.strip().upper() for x in a.only.split(",") if x.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        sys.exit(f"instr: unknown scenario(s) {', '.join(sorted(unknown))}")
    if not a.cpu:
        B.need("valgrind", "valgrind")
    B.need("openssl", "openssl")
    binary = a.binary
    if not binary:
        print("instr: building autoprov (release)...", file=sys.stderr)
        B.sh(["cargo", "build", "--release", "--quiet", "-p", "autoprov"], cwd=B.ROOT)
        binary = os.path.join(B.ROOT, "target", "release", "autoprov")
    runs = [("autoprov", binary)] + ([("baseline", a.baseline)] if a.baseline else [])
    results = {}
    for label, path in runs:
        how = "natively" if a.cpu else "under callgrind"
        print(f"instr: measuring {path} {how}...", file=sys.stderr)
        results[label] = measure(os.path.abspath(path), scenarios, a.requests, a.devices, a.keep, a.cpu)
    if a.cpu:
        head = "| scenario | user µs/request | system µs/request |"
        if a.baseline:
            head = "| scenario | user µs/request | baseline | system µs/request | baseline | status |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for kind in scenarios:
            (user, system), statuses, _ = results["autoprov"][kind]
            st = ",".join(map(str, statuses))
            if a.baseline:
                (bu, bs), _, _ = results["baseline"][kind]
                print(f"| {kind} | {user:.1f} | {bu:.1f} | {system:.1f} | {bs:.1f} | {st} |")
            else:
                print(f"| {kind} | {user:.1f} | {system:.1f} | {st} |")
        return
    head = "| scenario | instructions/request | status |"
    if a.baseline:
        head = "| scenario | instructions/request | baseline | change | status |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for kind in scenarios:
        ir, statuses, _ = results["autoprov"][kind]
        st = ",".join(map(str, statuses))
        if a.baseline:
            bir = results["baseline"][kind][0]
            print(f"| {kind} | {ir:,.0f} | {bir:,.0f} | {(ir / bir - 1) * 100:+.1f} % | {st} |")
        else:
            print(f"| {kind} | {ir:,.0f} | {st} |")


if __name__ == "__main__":
    main()
