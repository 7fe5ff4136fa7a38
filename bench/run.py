#!/usr/bin/env python3
"""autoprov vs nginx, side by side in one run on one machine.

Usage:  python3 bench/run.py [--quick] [--only R1,R3,STORM] [--duration 10] [--devices 10000]

Builds autoprov (release), creates a throwaway site with many devices (innovaphone and Yealink),
renders the very bytes each device gets and lets nginx serve those copies as static files, then
drives both servers with the same load (wrk, every request for the next of many distinct
devices) and prints autoprov/nginx ratios with the raw figures: requests/s, CPU time per
request, p50/p99 latency, peak memory (VmHWM, reset before each scenario).

Scenarios
  R1     configuration GET, keep-alive (innovaphone devices in their final phase, CHECK good)
  R2     the same with a new connection per request (Connection: close), as phones do
  R3     the same over HTTPS, new connection and full TLS handshake per request (ECDSA P-256
         certificate, no session resumption; bench/tlsload.py, since wrk resumes sessions;
         nginx's log counts full and resumed handshakes)
  R4     conditional GET answered 304: Yealink <mac>.cfg with If-None-Match (autoprov's ETag;
         nginx its own ETag of the same bytes), keep-alive
  R5     first contact of never-seen devices (identify, plan, record state) vs nginx static
  R6     a 50 MB firmware file, 200 concurrent downloads (also: anonymous memory per download)
  FLOOR  what the HTTP edge alone costs: a path nobody serves (404 from both), keep-alive; the
         ratio is the ceiling any scenario of a server built this way can reach on this machine
  STORM  boot storm against autoprov alone: 100k never-seen devices (half innovaphone, half
         Yealink) arriving evenly within 60 s, open loop (bench/storm.py); served within 120 s?

Afterwards IDLE: autoprov's resident memory with every device the run created known (3 s after
the last request, and after 18 s of quiet), against 50 MB + 1.5 KB per known device.

R1, R2 and R4 are preceded by a 2 s warm-up of the same load for each server, measured right
after it: autoprov drops its speed-only caches after 1-2 s without requests (an idle server
should be small), which a fleet that keeps polling never sees, but each server's run follows
the other's.

--quick: 3 s per run, 1000 devices, a storm of 20k devices in 12 s (deadline 24 s).
Needs nginx and wrk (Debian: nginx-light wrk) and openssl; installs them when missing and
running as root. Numbers depend on the machine and on what else runs: read ratios, not
absolutes.
"""

import argparse
import concurrent.futures
import json
import resource
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


# Seconds of unmeasured load before R1, R2 and R4 (see the module docs).
WARM = 2

# Never-seen serials R5 may ask for: two wrk threads of ~25 000 req/s each for 10 s stay
# within their halves.
FRESH_DEVICES = 600_000


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
[settings]
sip_server = "pbx.example.com"
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
[firmware]
# R6 runs 200 downloads at once; the default budget (16) would answer most with 503.
max_downloads = 256
[tls]
cert = "tls/server.crt"
key = "tls/server.key"
"""

YEALINK_OUI = "001565"
YEALINK_UA = "Yealink SIP-T46S 66.86.0.15 {mac}"


def yealink_mac(i):
    return f"{YEALINK_OUI}{i:06x}"


def make_site(d, devices):
    os.makedirs(os.path.join(d, "scripts"))
    os.makedirs(os.path.join(d, "fw", "137640"))
    os.makedirs(os.path.join(d, "tls"))
    with open(os.path.join(d, "autoprov.toml"), "w") as f:
        f.write(SITE_TOML)
        # A line per Yealink phone, so that every <mac>.cfg has its own bytes.
        for i in range(devices):
            f.write(f'[devices."{yealink_mac(i)}".settings]\n'
                    f'lines.1 = {{ user = "{10000 + i}", password = "pw{i:05d}", display_name = "Phone {i}" }}\n')
    # ECDSA P-256 server certificate, shared by autoprov and nginx.
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", os.path.join(d, "tls", "server.key"), "-out", os.path.join(d, "tls", "server.crt"),
        "-days", "30", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    def reset_peak(self):
        """Reset VmHWM to the current RSS (Linux >= 4.0), so that the next reading is this
        scenario's peak. Returns False when that is not possible (then the peak is lifetime)."""
        ok = True
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                ok = False
        return ok

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

    def status_kib(self, *keys):
        """Sum of the given /proc/<pid>/status fields (kB) over the processes."""
        total = {k: 0 for k in keys}
        for pid in self.pids():
            try:
                for line in open(f"/proc/{pid}/status"):
                    k = line.split(":", 1)[0]
                    if k in total:
                        total[k] += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


LUA = """
-- Each line of the file: a path, then optional tab-separated "Name: value" headers.
-- Requests are built once per thread; thread n of N starts n/N of the way into the list, so
-- that the threads walk disjoint stretches (a list of never-seen devices stays never-seen).
local file = "{file}"
local reqs = {{}}
local counter = 0
local threads = {{}}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  for line in io.lines(file) do
    local fields = {{}}
    for f in string.gmatch(line, "[^\\t]+") do fields[#fields + 1] = f end
    local headers = {{}}
    {close}
    for k = 2, #fields do
      local name, value = string.match(fields[k], "^([^:]+):%s*(.*)$")
      headers[name] = value
    end
    reqs[#reqs + 1] = wrk.format("GET", fields[1], headers)
  end
  i = math.floor((id or 0) * #reqs / {threads})
  c200 = 0; c304 = 0; c503 = 0; cother = 0
end
function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
"""

LUA_COUNT = """
function response(status, headers, body)
  if status == 200 then c200 = c200 + 1
  elseif status == 304 then c304 = c304 + 1
  elseif status == 503 then c503 = c503 + 1
  else cother = cother + 1 end
end
function done(summary, latency, requests)
  local a, b, c, d = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("c200"); b = b + t:get("c304"); c = c + t:get("c503"); d = d + t:get("cother")
  end
  io.write(string.format("STATUS 200=%d 304=%d 503=%d other=%d\\n", a, b, c, d))
end
"""


def wrk(url, paths_file, duration, connections, close=False, threads=2, count=False, timeout=None):
    lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    lua.write(LUA.format(file=paths_file, close='headers["Connection"] = "close"' if close else "",
                         threads=threads))
    if count:
        lua.write(LUA_COUNT)
    lua.close()
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
         "-s", lua.name] + (["--timeout", timeout] if timeout else []) + [url],
        capture_output=True, text=True).stdout
    os.unlink(lua.name)
    return parse_wrk(out)


def tlsload(port, paths_file, duration, connections):
    """R3: a full TLS handshake per request (bench/tlsload.py; wrk would resume sessions)."""
    procs = 2
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "tlsload.py"), "--port", str(port),
         "--paths", paths_file, "--duration", str(duration), "--processes", str(procs),
         "--threads", str(max(1, connections // procs))],
        capture_output=True, text=True)
    try:
        return json.loads(out.stdout)
    except ValueError:
        sys.exit(f"bench: tlsload.py failed: {out.stderr}")


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
        elif line.startswith("STATUS "):
            res["status"] = dict(kv.split("=") for kv in t[1:])
        elif "Socket errors" in line:
            res["sockerr"] = sum(int(x.strip(",")) for x in t[3::2])
        elif line.startswith("Transfer/sec:"):
            v = t[1]
            for u in ("GB", "MB", "KB", "B"):
                if v.endswith(u):
                    res["mbps"] = float(v[: -len(u)]) * units[u]
                    break
    return res


def measure(proc, fn, anon_per=None, warm=None):
    """Run fn (a load) against proc: CPU per request and peak RSS. With anon_per = N (the
    number of concurrent transfers), also the growth of the server's anonymous memory over
    its level before the load, sampled every 200 ms, per transfer (R6's memory target is per
    active download; the file's pages are page cache, not the server's). `warm`, if given,
    runs first, unmeasured (see the module docs)."""
    if warm:
        warm()
    proc.reset_peak()
    sampler = None
    if anon_per:
        import threading
        pids = proc.pids()
        time.sleep(3)  # the server hands back what the previous load used after 1-2 s quiet
        base = proc.status_kib("RssAnon")["RssAnon"]
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.2):
                total = 0
                for pid in pids:
                    try:
                        for line in open(f"/proc/{pid}/status"):
                            if line.startswith("RssAnon:"):
                                total += int(line.split()[1])
                    except OSError:
                        pass
                peak[0] = max(peak[0], total)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    c0 = proc.cpu()
    r = fn()
    c1 = proc.cpu()
    if sampler:
        stop.set()
        sampler.join()
        r["anon_base_mib"] = base / 1024
        r["anon_peak_mib"] = peak[0] / 1024
        r["anon_kib_per_transfer"] = max(peak[0] - base, 0) / anon_per
    r["cpu_us_per_req"] = (c1 - c0) * 1e6 / max(r["requests"], 1)
    r["peak_mib"] = proc.peak_kib() / 1024
    return r


def fetch(url, headers=None):
    r = urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}))
    return r.read(), r.headers


def scrape(base, token):
    """autoprov's /metrics as {series: value}; {} when it cannot be read."""
    if not token:
        return {}
    try:
        body, _ = fetch(f"{base}/metrics", {"Authorization": f"Bearer {token}"})
    except OSError:
        return {}
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def cache_note(sc, before, after):
    """What autoprov's caches and budgets did during scenario `sc` (from /metrics), or None."""
    if not before or not after:
        return None
    d = lambda k: after.get(k, 0) - before.get(k, 0)
    parts = []
    st = {r: d(f'autoprov_state_cache_lookups_total{{result="{r}"}}') for r in ("memory", "absent", "database")}
    if sum(st.values()):
        parts.append("state loads " + ", ".join(f"{r} {int(v)}" for r, v in st.items()))
    hit, miss = (d(f'autoprov_render_cache_lookups_total{{result="{r}"}}') for r in ("hit", "miss"))
    if hit + miss:
        parts.append(f"render cache {int(hit)} hits / {int(miss)} misses")
    if d("autoprov_state_writes_total"):
        parts.append(f"{int(d('autoprov_state_writes_total'))} states written in "
                     f"{int(d('autoprov_state_batches_total'))} batches "
                     f"({d('autoprov_state_batch_seconds_total'):.1f} s writing)")
    refused = {b: d(f'autoprov_refused_total{{budget="{b}"}}') for b in ("config", "firmware", "connections")}
    if sum(refused.values()):
        parts.append("refused " + ", ".join(f"{b} {int(v)}" for b, v in refused.items() if v))
    return f"{sc} (autoprov /metrics): " + "; ".join(parts) if parts else None


def prepare_innovaphone(base, i):
    """Bring device i to its steady state; return (autoprov path, steady bytes)."""
    body, _ = fetch(f"{base}/update.php?{device_query(i)}")
    check = None
    for line in body.decode("latin-1").splitlines():
        if line.startswith("mod cmd UP1 check ser "):
            check = line.split()[-1]
    q = device_query(i, check)
    steady, _ = fetch(f"{base}/update.php?{q}")
    again, _ = fetch(f"{base}/update.php?{q}")

    # Stable apart from the snippet age in seconds ("# newest script (...) Ns old").
    def strip_age(b):
        return b"\n".join(x for x in b.split(b"\n") if not x.startswith(b"# newest script"))
    assert strip_age(steady) == strip_age(again), "steady-state answer must be stable"
    return f"/update.php?{q}", steady


def prepare_yealink(base, i):
    """First contact of Yealink phone i; return (path, User-Agent, bytes, ETag)."""
    mac = yealink_mac(i)
    ua = YEALINK_UA.format(mac=mac)
    body, headers = fetch(f"{base}/{mac}.cfg", {"User-Agent": ua})
    etag = headers.get("ETag")
    assert etag, "vendor files must carry an ETag (R4)"
    return f"/{mac}.cfg", ua, body, etag


def nginx_etag(path):
    st = os.stat(path)
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def fmt_ms(v):
    return "-" if v is None else str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 10, quick 3)")
    ap.add_argument("--devices", type=int, help="distinct devices per scenario (default 10000, quick 1000)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--only", "--scenarios", dest="only", default="R1,R2,R3,R4,R5,R6,FLOOR,STORM",
                    help="comma-separated subset of R1,R2,R3,R4,R5,R6,FLOOR,STORM")
    ap.add_argument("--quick", action="store_true", help="short runs, fewer devices, a smaller storm")
    ap.add_argument("--storm-devices", type=int, help="default 100000 (quick 20000)")
    ap.add_argument("--storm-window", type=float, help="arrival window in s (default 60, quick 12)")
    ap.add_argument("--storm-deadline", type=float, help="every device served by then (default 120, quick 24)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--binary", help="use this autoprov binary instead of building one")
    a = ap.parse_args()
    q = a.quick
    a.duration = a.duration or (3 if q else 10)
    a.devices = a.devices or (1000 if q else 10000)
    a.storm_devices = a.storm_devices or (20000 if q else 100000)
    a.storm_window = a.storm_window or (12 if q else 60)
    a.storm_deadline = a.storm_deadline or (24 if q else 120)
    scenarios = [x.strip().upper() for x in a.only.split(",") if x.strip()]
    unknown = set(scenarios) - {"R1", "R2", "R3", "R4", "R5", "R6", "FLOOR", "STORM"}
    if unknown:
        sys.exit(f"bench: unknown scenario(s) {', '.join(sorted(unknown))}")
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    need("openssl", "openssl")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by both servers

    binary = a.binary
    if not binary:
        print("bench: building autoprov (release)...", file=sys.stderr)
        sh(["cargo", "build", "--release", "--quiet", "-p", "autoprov"], cwd=ROOT)
        binary = os.path.join(ROOT, "target", "release", "autoprov")

    work = tempfile.mkdtemp(prefix="autoprov-bench-")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user
    site = os.path.join(work, "site")
    make_site(site, a.devices)
    os.chmod(os.path.join(site, "tls", "server.key"), 0o644)
    with open(os.path.join(site, "fw", "137640", "ip232.bin"), "wb") as f:
        f.write(os.urandom(1 << 20) * 50)  # 50 MiB

    ap_port, ap_tls = free_port(), free_port()
    autoprov = Proc([binary, "serve", "--site", site, "--listen", f"127.0.0.1:{ap_port}",
                     "--https", f"127.0.0.1:{ap_tls}"],
                    env=dict(os.environ, AUTOPROV_LOG="warn", AUTOPROV_ADMIN_PASSWORD="bench only"))
    wait_port(ap_port)
    wait_port(ap_tls)
    base = f"http://127.0.0.1:{ap_port}"
    token = subprocess.run([binary, "admin", "token", "--site", site, "--label", "bench"],
                           capture_output=True, text=True).stdout.strip()

    # Bring every device to its steady state and render the exact bytes it gets from then on.
    static = os.path.join(work, "static")
    for d in ("r", "y", os.path.join("fw", "137640")):
        os.makedirs(os.path.join(static, d))
    os.link(os.path.join(site, "fw", "137640", "ip232.bin"), os.path.join(static, "fw", "137640", "ip232.bin"))
    print(f"bench: preparing {a.devices} innovaphone and {a.devices} Yealink devices...", file=sys.stderr)
    t_prep = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        inno = list(pool.map(lambda i: prepare_innovaphone(base, i), range(a.devices)))
        yea = list(pool.map(lambda i: prepare_yealink(base, i), range(a.devices)))
    print(f"bench: prepared in {time.time() - t_prep:.0f} s", file=sys.stderr)
    ap_paths, ng_paths = [], []
    for i, (path, body) in enumerate(inno):
        with open(os.path.join(static, "r", f"{sn(i)}.txt"), "wb") as f:
            f.write(body)
        ap_paths.append(path)
        ng_paths.append(f"/r/{sn(i)}.txt")
    ap_cond, ng_cond = [], []
    for i, (path, ua, body, etag) in enumerate(yea):
        file = os.path.join(static, "y", f"{yealink_mac(i)}.cfg")
        with open(file, "wb") as f:
            f.write(body)
        ap_cond.append(f"{path}\tUser-Agent: {ua}\tIf-None-Match: {etag}")
        ng_cond.append(f"/y/{yealink_mac(i)}.cfg\tIf-None-Match: {nginx_etag(file)}")
    files = {
        "ap": write_lines(os.path.join(work, "ap.paths"), ap_paths),
        "ng": write_lines(os.path.join(work, "ng.paths"), ng_paths),
        "ap_cond": write_lines(os.path.join(work, "ap_cond.paths"), ap_cond),
        "ng_cond": write_lines(os.path.join(work, "ng_cond.paths"), ng_cond),
        # First contact: never-seen serials, more than a run asks for (each wrk thread walks
        # its own half; /metrics in the notes shows whether any was seen twice).
        "fresh": write_lines(os.path.join(work, "fresh.paths"),
                             [f"/update.php?type=IP232&sn={sn(i)}&hwid=IP232-x&ip=10.9.9.9"
                              for i in range(a.devices, a.devices + FRESH_DEVICES)]),
        "fw": write_lines(os.path.join(work, "fw.paths"), ["/fw/137640/ip232.bin"]),
        "none": write_lines(os.path.join(work, "none.paths"), ["/no/such/file.txt"]),
    }

    ng_port, ng_tls = free_port(), free_port()
    conf = os.path.join(work, "nginx.conf")
    tls_log = os.path.join(work, "nginx-tls.log")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 2;
worker_rlimit_nofile 65536;
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
  log_format tls "$ssl_session_reused $ssl_protocol $ssl_cipher";
  server {{
    listen 127.0.0.1:{ng_port};
    root {static};
  }}
  server {{
    listen 127.0.0.1:{ng_tls} ssl;
    ssl_certificate {site}/tls/server.crt;
    ssl_certificate_key {site}/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    access_log {tls_log} tls buffer=256k flush=1s;
    root {static};
  }}
}}
""")
    nginx = Proc(["nginx", "-c", conf, "-p", work])
    wait_port(ng_port)
    wait_port(ng_tls)
    # nginx's ETag must be what we computed (mtime-size), or R4 would measure 200s.
    _, h = fetch(f"http://127.0.0.1:{ng_port}/y/{yealink_mac(0)}.cfg")
    assert h.get("ETag") == nginx_etag(os.path.join(static, "y", f"{yealink_mac(0)}.cfg")), h.get("ETag")

    apu, ngu = f"http://127.0.0.1:{ap_port}", f"http://127.0.0.1:{ng_port}"
    apt, ngt = f"https://127.0.0.1:{ap_tls}", f"https://127.0.0.1:{ng_tls}"
    c, d = a.connections, a.duration
    results, notes, storm, idle = {}, [], None, None
    try:
        before = {}

        def marked(load):
            """`load`, then the /metrics the scenario's notes count from."""
            def run():
                load()
                before.clear()
                before.update(scrape(base, token))
            return run

        for sc in scenarios:
            print(f"bench: {sc}...", file=sys.stderr)
            before.clear()
            before.update(scrape(base, token))
            if sc == "R1":
                results[sc] = (measure(autoprov, lambda: wrk(apu, files["ap"], d, c),
                                       warm=marked(lambda: wrk(apu, files["ap"], WARM, c))),
                               measure(nginx, lambda: wrk(ngu, files["ng"], d, c),
                                       warm=lambda: wrk(ngu, files["ng"], WARM, c)))
            elif sc == "R2":
                results[sc] = (measure(autoprov, lambda: wrk(apu, files["ap"], d, c, close=True),
                                       warm=marked(lambda: wrk(apu, files["ap"], WARM, c))),
                               measure(nginx, lambda: wrk(ngu, files["ng"], d, c, close=True),
                                       warm=lambda: wrk(ngu, files["ng"], WARM, c)))
            elif sc == "R3":
                results[sc] = (measure(autoprov, lambda: tlsload(ap_tls, files["ap"], d, c)),
                               measure(nginx, lambda: tlsload(ng_tls, files["ng"], d, c)))
                time.sleep(1.5)  # nginx flushes its log buffer
                fresh_hs = reused = 0
                protos = {}
                try:
                    for line in open(tls_log):
                        t = line.split()
                        if t and t[0] == "r":
                            reused += 1
                        else:
                            fresh_hs += 1
                        if len(t) > 2:
                            protos[f"{t[1]} {t[2]}"] = protos.get(f"{t[1]} {t[2]}", 0) + 1
                except OSError:
                    pass
                notes.append(f"R3: nginx logged {fresh_hs} full handshakes and {reused} resumed sessions "
                             f"({', '.join(f'{k}: {v}' for k, v in protos.items())}); bench/tlsload.py makes a new "
                             f"connection and session for every request to both servers")
            elif sc == "R4":
                results[sc] = (measure(autoprov, lambda: wrk(apu, files["ap_cond"], d, c, count=True),
                                       warm=marked(lambda: wrk(apu, files["ap_cond"], WARM, c))),
                               measure(nginx, lambda: wrk(ngu, files["ng_cond"], d, c, count=True),
                                       warm=lambda: wrk(ngu, files["ng_cond"], WARM, c)))
                notes.append(f"R4: statuses autoprov {results[sc][0].get('status')}, "
                             f"nginx {results[sc][1].get('status')}")
            elif sc == "R5":
                results[sc] = (measure(autoprov, lambda: wrk(apu, files["fresh"], d, c)),
                               measure(nginx, lambda: wrk(ngu, files["ng"], d, c)))
            elif sc == "FLOOR":
                results[sc] = (measure(autoprov, lambda: wrk(apu, files["none"], d, c, count=True)),
                               measure(nginx, lambda: wrk(ngu, files["none"], d, c, count=True)))
                notes.append(f"FLOOR: statuses autoprov {results[sc][0].get('status')}, "
                             f"nginx {results[sc][1].get('status')} (404 by design, not errors)")
                for r in results[sc]:
                    r["non2xx"] = 0
            elif sc == "R6":
                dd = max(d, 10)
                # 200 x 50 MiB take longer than wrk's default 2 s timeout
                results[sc] = (measure(autoprov, lambda: wrk(apu, files["fw"], dd, 200, timeout="120s"),
                                       anon_per=200),
                               measure(nginx, lambda: wrk(ngu, files["fw"], dd, 200, timeout="120s"),
                                       anon_per=200))
                ra, rn = results[sc]
                notes.append(
                    f"R6 memory per active download (anonymous memory over the level before the "
                    f"load, peak of 200 ms samples, / 200): autoprov {ra['anon_kib_per_transfer']:.0f} KiB "
                    f"({ra['anon_base_mib']:.1f} -> {ra['anon_peak_mib']:.1f} MiB), nginx "
                    f"{rn['anon_kib_per_transfer']:.0f} KiB ({rn['anon_base_mib']:.1f} -> "
                    f"{rn['anon_peak_mib']:.1f} MiB); target <= 256 KiB")
            elif sc == "STORM":
                autoprov.reset_peak()
                c0 = autoprov.cpu()
                out = subprocess.run(
                    [sys.executable, os.path.join(ROOT, "bench", "storm.py"), "--port", str(ap_port),
                     "--devices", str(a.storm_devices), "--window", str(a.storm_window),
                     "--deadline", str(a.storm_deadline)],
                    capture_output=True, text=True)
                try:
                    storm = json.loads(out.stdout)
                except ValueError:
                    sys.exit(f"bench: storm.py failed: {out.stderr}")
                storm["cpu_us_per_req"] = (autoprov.cpu() - c0) * 1e6 / max(storm["requests"], 1)
                storm["peak_mib"] = autoprov.peak_kib() / 1024
            seen = cache_note(sc, before, scrape(base, token))
            if seen:
                notes.append(seen)
        # Idle memory with every device the run created known: the target is
        # 50 MB + 1.5 KB per known device. Anonymous memory is what the process owns; the
        # file-backed part is the SQLite memory map (page cache, reclaimable). Read 3 s after
        # the load and again 15 s later (the server drops its speed-only caches and hands
        # freed memory back after 1-2 s without requests).
        import sqlite3
        with sqlite3.connect(f"file:{os.path.join(site, 'autoprov.db')}?mode=ro", uri=True) as db:
            known = db.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
        idle = {"known": known, "budget_mib": (50e6 + 1.5e3 * known) / 2**20}
        for label, wait in (("busy", 3), ("quiet", 15)):
            time.sleep(wait)
            m = autoprov.status_kib("VmRSS", "RssAnon", "RssFile")
            idle[label] = {"rss_mib": m["VmRSS"] / 1024, "anon_mib": m["RssAnon"] / 1024,
                           "file_mib": m["RssFile"] / 1024}
    finally:
        autoprov.stop()
        nginx.stop()

    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"\nautoprov vs nginx — {time.strftime('%Y-%m-%d')} on {os.uname().nodename}, "
          f"{os.cpu_count()} cores ({cpu}), {a.devices} devices, {a.duration}s per run, "
          f"{a.connections} connections\n")
    hdr = f"{'scenario':<9}{'ratio':>7}{'autoprov':>10}{'nginx':>10}" \
          f"{'cpu us/req a|n':>17}{'p50 a|n':>18}{'p99 a|n':>18}{'peak MiB a|n':>15}{'errors a|n':>12}"
    print(hdr)
    print("-" * len(hdr))
    for sc, (ra, rn) in results.items():
        key = "mbps" if sc == "R6" else "rps"  # firmware: bytes per second
        ratio = ra[key] / rn[key] if rn[key] else 0
        err_a = ra["non2xx"] + ra.get("sockerr", 0)
        err_n = rn["non2xx"] + rn.get("sockerr", 0)
        print(f"{sc:<9}{ratio:>6.2f}x{ra[key]:>10.0f}{rn[key]:>10.0f}"
              f"{ra['cpu_us_per_req']:>8.1f}|{rn['cpu_us_per_req']:<8.1f}"
              f"{str(ra['p50']):>9}|{str(rn['p50']):<8}{str(ra['p99']):>9}|{str(rn['p99']):<8}"
              f"{ra['peak_mib']:>7.1f}|{rn['peak_mib']:<7.1f}{err_a:>6}|{err_n:<5}")
    if "R6" in results:
        print("(R6: MiB/s, not requests/s)")
    for n in notes:
        print(n)
    if storm:
        ok = storm["served"] == storm["devices"] and storm["done_max_s"] is not None \
            and storm["done_max_s"] <= storm["deadline_s"]
        print(f"\nSTORM: {storm['devices']} new devices arriving within {storm['window_s']:.0f} s "
              f"(arrivals took {storm['arrivals_took_s']} s), autoprov only, new connection each:")
        print(f"  served {storm['served']}, unserved at {storm['deadline_s']:.0f} s {storm['unserved']}, "
              f"failed {storm['failed']}, connection errors {storm['conn_errors']}; "
              f"every device served within {storm['deadline_s']:.0f} s: {'yes' if ok else 'NO'}")
        print(f"  answers {storm['statuses']} ({storm['non200']} non-200); request p50/p99 "
              f"{fmt_ms(storm['req_p50_ms'])}/{fmt_ms(storm['req_p99_ms'])} ms; device done after "
              f"p50/p99/max {storm['done_p50_s']}/{storm['done_p99_s']}/{storm['done_max_s']} s; "
              f"cpu {storm['cpu_us_per_req']:.0f} us/req; peak {storm['peak_mib']:.1f} MiB")
    if idle:
        print(f"\nIDLE: {idle['known']} known devices; target 50 MB + 1.5 KB per device = "
              f"{idle['budget_mib']:.0f} MiB")
        for label, what in (("busy", "3 s after the last request"),
                            ("quiet", "after 18 s without requests")):
            m = idle[label]
            print(f"  {what}: RSS {m['rss_mib']:.0f} MiB = {m['anon_mib']:.0f} MiB anonymous + "
                  f"{m['file_mib']:.0f} MiB file-backed (SQLite map): "
                  f"{'met' if m['anon_mib'] <= idle['budget_mib'] else 'NOT met'} (anonymous)")
    if a.json:
        with open(a.json, "w") as f:
            out = {k: [{kk: vv for kk, vv in r.items() if kk != "raw"} for r in v] for k, v in results.items()}
            if storm:
                out["STORM"] = storm
            if idle:
                out["IDLE"] = idle
            json.dump(out, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
