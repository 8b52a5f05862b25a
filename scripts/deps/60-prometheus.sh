# Prometheus (Debian's `prometheus` package): `promtool` checks the alert rules and scrape config in
# docs/monitoring/, and `prometheus` itself scrapes the model server in the SLO tests. The tests start their
# own servers on 127.0.0.1 with their own config; the packaged service (it listens on all interfaces) is
# never left running.
# Sourced by scripts/test (ROOT and VENV set, `set -euo pipefail`); idempotent. Installs only as root with
# apt; otherwise it does nothing, and the tests skip (or fail under CI=true) without promtool.
# Exports LEPTON_PROMTOOL=<path to promtool> when it is present: the tests then fail instead of skipping.

if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "scripts/deps/60-prometheus.sh: installing prometheus (apt)" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }; } ||
    { echo "scripts/deps/60-prometheus.sh: apt-get install prometheus failed" >&2; exit 1; }
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi
if command -v promtool >/dev/null 2>&1; then
  LEPTON_PROMTOOL=$(command -v promtool)
  export LEPTON_PROMTOOL
fi
