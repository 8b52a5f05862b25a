# The real Docker engine, for image builds and for running CI job scripts in a runner-like container:
# dockerd (Debian's docker.io) started here with no bridge network and no iptables changes (containers use
# `--network host`; see ../shared/ENVIRONMENT.md "Docker engine"), and the base image
# `lepton-test/python:3.11` (Debian bookworm minbase with python3 and python3-venv, and no git: what a
# minimal Python runner image offers), built with debootstrap since no image can be pulled here.
# Sourced by scripts/test (ROOT and VENV set, `set -euo pipefail`); idempotent.
# Exports DOCKER_HOST=unix://<socket> and LEPTON_DOCKER=1 (the tests then fail instead of skipping when
# the engine is missing), and adds dockerd's PID to LEPTON_STOP_PIDS and its scratch directory to
# LEPTON_CLEANUP_DIRS, which scripts/test stops and removes at exit.
#
# Caches under LEPTON_TEST_CACHE (default /var/cache/lepton-ci-test when root, else .cache/): the base
# image's rootfs tarball, and the engine's data root (images and build cache), so a second run starts in
# seconds. The data root is used by one engine at a time (a lock); a concurrent run gets a temporary one.

lepton_docker_fail() {
  echo "scripts/deps/40-docker.sh: $*" >&2
  exit 1
}

lepton_docker_apt() {
  # apt-get install, with an `apt-get update` only when the first try fails (stale or empty lists).
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    lepton_docker_fail "$1 is missing; install it (as root: apt-get install ${*:2})"
  fi
  echo "scripts/deps/40-docker.sh: installing ${*:2} (apt)" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${@:2}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${@:2}" >/dev/null; }; } ||
    lepton_docker_fail "apt-get install ${*:2} failed"
}

if [ "$(id -u)" = 0 ]; then
  lepton_docker_cache=${LEPTON_TEST_CACHE:-/var/cache/lepton-ci-test}
else
  lepton_docker_cache=${LEPTON_TEST_CACHE:-$ROOT/.cache/lepton-ci-test}
fi
mkdir -p "$lepton_docker_cache"

command -v dockerd >/dev/null 2>&1 || lepton_docker_apt dockerd docker.io
command -v debootstrap >/dev/null 2>&1 || lepton_docker_apt debootstrap debootstrap
command -v docker >/dev/null 2>&1 || lepton_docker_fail "the docker CLI is missing (it comes with docker.io)"

# The engine: the persistent data root when no other engine holds it, else a temporary one. The socket and
# exec root live in a short temporary directory (a unix socket path must stay under 108 bytes).
lepton_docker_run=$(mktemp -d /tmp/lepton-docker.XXXXXX)
export LEPTON_CLEANUP_DIRS="${LEPTON_CLEANUP_DIRS:+$LEPTON_CLEANUP_DIRS }$lepton_docker_run"
lepton_docker_root="$lepton_docker_cache/docker"
mkdir -p "$lepton_docker_root"
# The lock is held by dockerd alone (this shell closes its copy once dockerd has it), so no other process
# started by the run (a registry, pytest) can keep the root locked after the engine is gone; and dockerd
# gets SIGTERM when this shell dies, even by SIGKILL (setpriv --pdeathsig), so a run that ends without its
# EXIT trap leaves no engine holding the root. A run that has just ended may still be stopping its engine:
# wait for it a little before falling back to a temporary root.
exec {lepton_docker_lock_fd}>"$lepton_docker_root/.lock"
if ! flock -w 20 "$lepton_docker_lock_fd"; then
  echo "scripts/deps/40-docker.sh: $lepton_docker_root is in use by another engine" \
    "($(pgrep -d, -f "dockerd --data-root $lepton_docker_root/data" || echo "pid unknown")); using a temporary data root" >&2
  lepton_docker_root="$lepton_docker_run/root"
fi
lepton_docker_deathsig=()
setpriv --help 2>/dev/null | grep -q -- --pdeathsig && lepton_docker_deathsig=(setpriv --pdeathsig TERM --)
"${lepton_docker_deathsig[@]}" dockerd --data-root "$lepton_docker_root/data" --exec-root "$lepton_docker_run/exec" \
  -H "unix://$lepton_docker_run/docker.sock" --pidfile "$lepton_docker_run/docker.pid" \
  --storage-driver=vfs --iptables=false --ip-forward=false --bridge=none \
  >"$lepton_docker_run/dockerd.log" 2>&1 &
lepton_docker_pid=$!
exec {lepton_docker_lock_fd}>&-
export LEPTON_STOP_PIDS="${LEPTON_STOP_PIDS:+$LEPTON_STOP_PIDS }$lepton_docker_pid"
export DOCKER_HOST="unix://$lepton_docker_run/docker.sock"
for _ in $(seq 1 100); do
  docker version >/dev/null 2>&1 && break
  kill -0 "$lepton_docker_pid" 2>/dev/null || lepton_docker_fail "dockerd exited: $(tail -n 5 "$lepton_docker_run/dockerd.log")"
  sleep 0.2
done
docker version >/dev/null 2>&1 || lepton_docker_fail "dockerd did not answer on $DOCKER_HOST: $(tail -n 5 "$lepton_docker_run/dockerd.log")"

# The base image: a debootstrap minbase rootfs (cached as a tarball), imported once per data root.
lepton_docker_base=lepton-test/python:3.11
lepton_docker_tar="$lepton_docker_cache/bookworm-minbase-python3.tar"
if ! docker image inspect "$lepton_docker_base" >/dev/null 2>&1; then
  if [ ! -s "$lepton_docker_tar" ]; then
    [ "$(id -u)" = 0 ] || lepton_docker_fail "building $lepton_docker_base needs root (debootstrap)"
    lepton_docker_mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    lepton_docker_fs=$(mktemp -d "$lepton_docker_cache/rootfs.XXXXXX")
    echo "scripts/deps/40-docker.sh: debootstrap bookworm minbase with python3, python3-venv (about a minute)" >&2
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$lepton_docker_fs" \
      "${lepton_docker_mirror:-http://deb.debian.org/debian}" >"$lepton_docker_run/debootstrap.log" 2>&1 ||
      { rm -rf "$lepton_docker_fs"; lepton_docker_fail "debootstrap failed: $(tail -n 5 "$lepton_docker_run/debootstrap.log")"; }
    # What a real minimal image lacks, this one must lack too (a test relies on it).
    [ ! -e "$lepton_docker_fs/usr/bin/git" ] || lepton_docker_fail "the minbase rootfs unexpectedly has git"
    rm -rf "$lepton_docker_fs"/var/cache/apt/archives/*.deb "$lepton_docker_fs"/var/lib/apt/lists/*
    chmod 0755 "$lepton_docker_fs"  # mktemp made it 0700: the image's / must be open to non-root users
    tar -C "$lepton_docker_fs" -cf "$lepton_docker_tar.tmp" . && mv "$lepton_docker_tar.tmp" "$lepton_docker_tar"
    rm -rf "$lepton_docker_fs"
  fi
  echo "scripts/deps/40-docker.sh: importing $lepton_docker_base" >&2
  docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$lepton_docker_tar" "$lepton_docker_base" >/dev/null ||
    lepton_docker_fail "docker import $lepton_docker_tar failed"
fi
# Image builds leave untagged layers behind (the classic builder's cache); keep a day's worth, so a rerun
# still reuses them while the data root stays bounded (vfs stores every layer in full).
docker image prune --force --filter until=24h >/dev/null 2>&1 || true
export LEPTON_DOCKER=1

unset lepton_docker_cache lepton_docker_run lepton_docker_root lepton_docker_pid lepton_docker_base lepton_docker_tar \
  lepton_docker_mirror lepton_docker_fs lepton_docker_lock_fd lepton_docker_deathsig
unset -f lepton_docker_fail lepton_docker_apt
