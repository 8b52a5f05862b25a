# The CNCF distribution server (Debian's docker-registry) for the oci:// registry tests. The tests start
# their own servers on 127.0.0.1 with their own config (tests/support/oci_registry.py); Debian's packaged
# service is never started (its default config listens on all interfaces).
# Sourced by scripts/test (ROOT and VENV set, `set -euo pipefail`); idempotent.
# Exports LEPTON_DOCKER_REGISTRY=<path to the docker-registry binary>.

lepton_oci_fail() {
  echo "scripts/deps/50-oci-registry.sh: $*" >&2
  exit 1
}

if ! command -v docker-registry >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/deps/50-oci-registry.sh: installing docker-registry (apt)" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry >/dev/null; }; } ||
      lepton_oci_fail "apt-get install docker-registry failed"
    # A package install may start the packaged service where an init system runs; it must not listen here.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
  else
    lepton_oci_fail "docker-registry is missing; install it, e.g. apt-get install docker-registry"
  fi
fi
export LEPTON_DOCKER_REGISTRY
LEPTON_DOCKER_REGISTRY=$(command -v docker-registry)
unset -f lepton_oci_fail
