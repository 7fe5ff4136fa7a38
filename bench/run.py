#!/usr/bin/env python3
"""autoprov vs nginx, side by side in one run on one machine.

Usage:  bench/run.py [--duration 10] [--devices 2000] [--connections 64] [--scenarios R1,R2,R5,R6]

Builds autoprov (release), creates a throwaway innovaphone site with many devices, renders the
very bytes each device gets and lets nginx serve those copies as static files, then drives both
servers with the same load (wrk, many distinct devices) and prints autoprov/nginx ratios with the
raw figures: requests/s, CPU time per request, p50/p99 latency, peak memory (VmHWM).

Scenarios
  R1  configuration GET, keep-alive (devices in their final phase, CHECK good: the steady poll)
  R2  the same with a new connection per request (Connection: close), as phones do
  R5  first contact of never-seen devices (identify, plan, record state) vs nginx static
  R6  a 50 MB firmware file, 200 concurrent downloads
  (R3 HTTPS and R4 conditional GET need the TLS listener and ETags; they are reported as
   "n/a" until those exist.)

Needs nginx and wrk (Debian: nginx-light wrk); installs them when missing and running as root.
Numbers depend on the machine and on what else runs: read ratios, not absolutes.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SN_FMT = "00-90-33-{:02x}-{:02x}-{:02x}"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def need(cmd, pkg):
    if shutil.which(cmd):
        return
    if os.geteuid() != 0:
        sys.exit(f"bench: {cmd} missing; install Debian package {pkg}")
    subprocess.run(["apt-get", "install", "-y", "-qq", pkg], check=False,
                   stdout=subprocess.DEVNULL)
    if not shutil.which(cmd):
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        sh(["apt-get", "install", "-y", "-qq", pkg], stdout=subprocess.DEVNULL)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench: nothing listens on {port}")


def sn(i):
    return SN_FMT.format((i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF)


def device_query(i, check=None):
    s = sn(i)
    q = (f"polling=0&phase=update&type=IP232&sn={s}&hwid=IP232-{s[9:]}&ip=10.1.{(i >> 8) & 255}.{i & 255}"
         f"&PROT=137640&BOOT=137640")
    if check:
        q += f"&CHECK={check}"
    return q


SITE_TOML = """
[server]
database = "autoprov.db"
[master]
info = "none"
firmware = "137640"
bootcode = "firmware"
[status]
enabled = true
[backup]
dir = "backup"
[times]
grace = 0
"""


def make_site(d):
    os.makedirs(os.path.join(d, "scripts"))
    os.makedirs(os.path.join(d, "fw", "137640"))
    with open(os.path.join(d, "autoprov.toml"), "w") as f:
        f.write(SITE_TOML)
    snippets = {
        "update-all-default.txt": "config add PHONE SIG /coder G722,20,\nconfig add CMD0 /tz CET\n",
        "update-phone-default.txt": "config add CMD0 /name This+is+a+Phone%21\n",
    }
    past = time.time() - 86400
    for name, text in snippets.items():
        p = os.path.join(d, "scripts", name)
        with open(p, "w") as f:
            f.write(text)
        os.utime(p, (past, past))


class Proc:
    """A server process with CPU and peak-memory readings from /proc."""

    def __init__(self, argv, **kw):
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)

    def pids(self):
        out = [self.p.pid]
        try:
            kids = subprocess.run(["pgrep", "-P", str(self.p.pid)], capture_output=True, text=True)
            out += [int(x) for x in kids.stdout.split()]
        except OSError:
            pass
        return out

    def cpu(self):
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                pass
        return total

    def peak_kib(self):
        peak = 0
        for pid in self.pids():
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmHWM:"):
                        peak += int(line.split()[1])
            except OSError:
                pass
        return peak

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


LUA_PATHS = """
local n = {n}
local i = 0
local prefix = "{prefix}"
local suffix = "{suffix}"
local paths = {{}}
for line in io.lines("{file}") do paths[#paths + 1] = line end
request = function()
  i = i + 1
  local p = paths[(i % #paths) + 1]
  return wrk.format("GET", p, {headers})
end
"""


def wrk(port, paths_file, duration, connections, close=False, threads=2):
    headers = '{["Connection"] = "close"}' if close else "nil"
    lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    lua.write(LUA_PATHS.format(n=0, prefix="", suffix="", file=paths_file, headers=headers))
    lua.close()
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
         "-s", lua.name, f"http://127.0.0.1:{port}"],
        capture_output=True, text=True).stdout
    os.unlink(lua.name)
    return parse_wrk(out)


def parse_wrk(out):
    res = {"rps": 0.0, "p50": None, "p99": None, "requests": 0, "non2xx": 0, "mbps": 0.0, "raw": out}
    units = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}
    for line in out.splitlines():
        t = line.split()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(t[1])
        elif line.strip().startswith("50%"):
            res["p50"] = t[1]
        elif line.strip().startswith("99%"):
            res["p99"] = t[1]
        elif "requests in" in line:
            res["requests"] = int(t[0])
        elif "Non-2xx" in line:
            res["non2xx"] = int(t[-1])
        elif line.startswith("Transfer/sec:"):
            v = t[1]
            for u in ("GB", "MB", "KB", "B"):
                if v.endswith(u):
                    res["mbps"] = float(v[: -len(u)]) * units[u]
                    break
    return res


def measure(proc, fn):
    c0 = proc.cpu()
    r = fn()
    c1 = proc.cpu()
    r["cpu_us_per_req"] = (c1 - c0) * 1e6 / max(r["requests"], 1)
    r["peak_mib"] = proc.peak_kib() / 1024
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--scenarios", default="R1,R2,R5,R6")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--binary", help="use this autoprov binary instead of building one")
    a = ap.parse_args()
    scenarios = a.scenarios.split(",")
    need("nginx", "nginx-light")
    need("wrk", "wrk")

    binary = a.binary
    if not binary:
        print("bench: building autoprov (release)...", file=sys.stderr)
        sh(["cargo", "build", "--release", "--quiet", "--bin", "autoprov"], cwd=ROOT)
        binary = os.path.join(ROOT, "target", "release", "autoprov")

    work = tempfile.mkdtemp(prefix="autoprov-bench-")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user
    site = os.path.join(work, "site")
    make_site(site)
    with open(os.path.join(site, "fw", "137640", "ip232.bin"), "wb") as f:
        f.write(os.urandom(1 << 20) * 50)  # 50 MiB

    ap_port = free_port()
    autoprov = Proc([binary, "serve", "--site", site, "--listen", f"127.0.0.1:{ap_port}"],
                    env=dict(os.environ, AUTOPROV_LOG="warn"))
    wait_port(ap_port)
    base = f"http://127.0.0.1:{ap_port}"

    # Bring every device to its steady state and render the exact bytes it gets from then on.
    static = os.path.join(work, "static")
    os.makedirs(os.path.join(static, "r"))
    os.makedirs(os.path.join(static, "fw", "137640"))
    os.link(os.path.join(site, "fw", "137640", "ip232.bin"), os.path.join(static, "fw", "137640", "ip232.bin"))
    ap_paths, ng_paths = [], []
    print(f"bench: preparing {a.devices} devices...", file=sys.stderr)
    for i in range(a.devices):
        body = urllib.request.urlopen(f"{base}/update.php?{device_query(i)}").read()
        check = None
        for line in body.decode("latin-1").splitlines():
            if line.startswith("mod cmd UP1 check ser "):
                check = line.split()[-1]
        q = device_query(i, check)
        steady = urllib.request.urlopen(f"{base}/update.php?{q}").read()
        again = urllib.request.urlopen(f"{base}/update.php?{q}").read()
        # Stable apart from the snippet age in seconds ("# newest script (...) Ns old").
        def strip_age(b):
            return b"\n".join(x for x in b.split(b"\n") if not x.startswith(b"# newest script"))
        assert strip_age(steady) == strip_age(again), "steady-state answer must be stable"
        with open(os.path.join(static, "r", f"{sn(i)}.txt"), "wb") as f:
            f.write(steady)
        ap_paths.append(f"/update.php?{q}")
        ng_paths.append(f"/r/{sn(i)}.txt")
    files = {}
    for name, paths in (("ap", ap_paths), ("ng", ng_paths)):
        files[name] = os.path.join(work, f"{name}.paths")
        with open(files[name], "w") as f:
            f.write("\n".join(paths) + "\n")
    # First contact: never-seen serials.
    fresh = os.path.join(work, "fresh.paths")
    with open(fresh, "w") as f:
        for i in range(a.devices, a.devices + 200000):
            f.write(f"/update.php?type=IP232&sn={sn(i)}&hwid=IP232-x&ip=10.9.9.9\n")
    one = os.path.join(work, "one.paths")
    with open(one, "w") as f:
        f.write(f"/r/{sn(0)}.txt\n")
    fw_paths = os.path.join(work, "fw.paths")
    with open(fw_paths, "w") as f:
        f.write("/fw/137640/ip232.bin\n")

    ng_port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type text/plain;
  server {{
    listen 127.0.0.1:{ng_port};
    root {static};
  }}
}}
""")
    nginx = Proc(["nginx", "-c", conf, "-p", work])
    wait_port(ng_port)

    results = {}
    try:
        for sc in scenarios:
            if sc == "R1":
                results[sc] = (measure(autoprov, lambda: wrk(ap_port, files["ap"], a.duration, a.connections)),
                               measure(nginx, lambda: wrk(ng_port, files["ng"], a.duration, a.connections)))
            elif sc == "R2":
                results[sc] = (measure(autoprov, lambda: wrk(ap_port, files["ap"], a.duration, a.connections, close=True)),
                               measure(nginx, lambda: wrk(ng_port, files["ng"], a.duration, a.connections, close=True)))
            elif sc == "R5":
                results[sc] = (measure(autoprov, lambda: wrk(ap_port, fresh, a.duration, a.connections)),
                               measure(nginx, lambda: wrk(ng_port, one, a.duration, a.connections)))
            elif sc == "R6":
                d = max(a.duration, 10)
                results[sc] = (measure(autoprov, lambda: wrk(ap_port, fw_paths, d, 200)),
                               measure(nginx, lambda: wrk(ng_port, fw_paths, d, 200)))
            else:
                print(f"bench: {sc}: n/a (not implemented yet)", file=sys.stderr)
    finally:
        autoprov.stop()
        nginx.stop()

    print(f"\nautoprov vs nginx — {time.strftime('%Y-%m-%d')} on {os.uname().nodename}, "
          f"{os.cpu_count()} cores, {a.devices} devices, {a.duration}s per run\n")
    hdr = f"{'scenario':<9}{'req/s ratio':>12}{'autoprov req/s':>16}{'nginx req/s':>13}" \
          f"{'cpu us/req a|n':>17}{'p50 a|n':>18}{'p99 a|n':>18}{'peak MiB a|n':>15}{'errors a|n':>12}"
    print(hdr)
    print("-" * len(hdr))
    print("(R6 compares MiB/s, not requests/s)")
    for sc, (ra, rn) in results.items():
        key = "mbps" if sc == "R6" else "rps"  # firmware: bytes per second
        ratio = ra[key] / rn[key] if rn[key] else 0
        print(f"{sc:<9}{ratio:>11.2f}x{ra[key]:>16.0f}{rn[key]:>13.0f}"
              f"{ra['cpu_us_per_req']:>8.1f}|{rn['cpu_us_per_req']:<8.1f}"
              f"{str(ra['p50']):>9}|{str(rn['p50']):<8}{str(ra['p99']):>9}|{str(rn['p99']):<8}"
              f"{ra['peak_mib']:>7.1f}|{rn['peak_mib']:<7.1f}{ra['non2xx']:>6}|{rn['non2xx']:<5}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: [{kk: vv for kk, vv in r.items() if kk != "raw"} for r in v]
                       for k, v in results.items()}, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
