# GitLab CI, run for real: gitlab-ci-local (pinned: 4.74 and later crash on Node 20), the rsync its
# shell executor needs, and check-jsonschema for linting .gitlab-ci.yml snippets.
# Sourced by scripts/test (ROOT and VENV set, `set -euo pipefail`); idempotent.
# Exports LEPTON_GITLAB_CI_LOCAL=<path to the gitlab-ci-local binary>.

lepton_gcl_version=4.73.0
lepton_gcl_dir="$ROOT/.cache/node/gitlab-ci-local"
lepton_gcl_bin="$lepton_gcl_dir/node_modules/.bin/gitlab-ci-local"

lepton_gitlab_fail() {
  echo "scripts/deps/30-gitlab.sh: $*" >&2
  exit 1
}

if ! command -v rsync >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/deps/30-gitlab.sh: installing rsync (apt)" >&2
    { apt-get install -y -q rsync >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q rsync >/dev/null; }; } ||
      lepton_gitlab_fail "apt-get install rsync failed"
  else
    lepton_gitlab_fail "rsync is missing (gitlab-ci-local's shell executor needs it); install it, e.g. apt-get install rsync"
  fi
fi

lepton_gcl_installed=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$lepton_gcl_dir/node_modules/gitlab-ci-local/package.json" 2>/dev/null | head -n 1 || true)
if [ ! -x "$lepton_gcl_bin" ] || [ "$lepton_gcl_installed" != "$lepton_gcl_version" ]; then
  command -v npm >/dev/null 2>&1 || lepton_gitlab_fail "npm is missing: gitlab-ci-local needs Node.js 18 or 20 with npm"
  echo "scripts/deps/30-gitlab.sh: installing gitlab-ci-local@$lepton_gcl_version into $lepton_gcl_dir" >&2
  mkdir -p "$lepton_gcl_dir"
  npm install --prefix "$lepton_gcl_dir" --no-audit --no-fund --loglevel=error "gitlab-ci-local@$lepton_gcl_version" >&2 ||
    lepton_gitlab_fail "npm install gitlab-ci-local@$lepton_gcl_version failed"
  [ -x "$lepton_gcl_bin" ] || lepton_gitlab_fail "gitlab-ci-local was installed but $lepton_gcl_bin is missing"
fi
export LEPTON_GITLAB_CI_LOCAL="$lepton_gcl_bin"

if ! "$VENV/bin/python" -c 'import check_jsonschema' >/dev/null 2>&1; then
  echo "scripts/deps/30-gitlab.sh: installing check-jsonschema into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet check-jsonschema || lepton_gitlab_fail "pip install check-jsonschema failed"
fi

unset lepton_gcl_version lepton_gcl_dir lepton_gcl_bin lepton_gcl_installed
