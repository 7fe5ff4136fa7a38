#!/usr/bin/env bash
# The whole test suite. Installs or starts what the tests need, then runs formatting, lint and
# every test (unit, golden, end-to-end). Usage: ./test.sh   (CI: .ci/run calls this)
set -euo pipefail
cd "$(dirname "$0")"

need_pkg() {  # need_pkg <command> <debian package>
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "test.sh: installing $2 (for $1)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
  fi
}
need_pkg curl curl
need_pkg openssl openssl
need_pkg sipp sip-tester        # SIP plug-and-play and NOTIFY peers (tests/e2e/sip*.rs)
need_pkg ip iproute2            # network namespaces for the multicast test
need_pkg dnsmasq dnsmasq-base   # checks the `dhcp-config --format dnsmasq` output
need_pkg chromium chromium         # headless browser test of the web UI (tests/e2e/admin.rs)
need_pkg chromedriver chromium-driver
# schemathesis (PyPI) tests the REST API against its OpenAPI document (tests/e2e/api_fuzz.rs);
# a venv under target/ keeps it between runs.
if [ ! -x target/pyenv/bin/st ]; then
  echo "test.sh: installing schemathesis into target/pyenv"
  if ! python3 -m venv target/pyenv >/dev/null 2>&1; then
    rm -rf target/pyenv
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv target/pyenv
  fi
  target/pyenv/bin/pip install -q schemathesis
fi
export AUTOPROV_SCHEMATHESIS="$PWD/target/pyenv/bin/st"

# A throwaway PostgreSQL for the second pass of the suite: Debian's server binaries, a cluster
# in a temporary directory started with pg_ctl on a free port, removed again on exit.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
  echo "test.sh: installing postgresql"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
PGBIN="$(pg_bin)"
PGTMP="$(mktemp -d /tmp/autoprov-pg.XXXXXX)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$PGTMP"
PGPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
stop_pg() { as_pg "$PGBIN/pg_ctl" -D "$PGTMP/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PGTMP"; }
trap stop_pg EXIT
as_pg "$PGBIN/initdb" -D "$PGTMP/data" -U autoprov --auth=trust --no-locale -E UTF8 >"$PGTMP/initdb.log" 2>&1 \
  || { cat "$PGTMP/initdb.log"; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w start -o \
  "-p $PGPORT -k $PGTMP -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=600" >/dev/null \
  || { cat "$PGTMP/server.log"; exit 1; }
PG_URL="postgres://autoprov@127.0.0.1:$PGPORT/postgres"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test (SQLite)"
cargo test --workspace --quiet
echo "== cargo test (PostgreSQL at 127.0.0.1:$PGPORT)"
AUTOPROV_TEST_POSTGRES="$PG_URL" cargo test --workspace --quiet
echo "test.sh: all tests passed"
