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

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --quiet
echo "test.sh: all tests passed"
