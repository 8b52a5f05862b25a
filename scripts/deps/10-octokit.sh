# GitHub's published REST contract: @octokit/openapi ships generated/api.github.com.json (OpenAPI 3.0.3,
# about 13 MB). The GitHub API stand-in (tests/support/github_standin.py) validates every request and
# every response it sends against it.
# Sourced by scripts/test (ROOT and VENV set, `set -euo pipefail`); idempotent.
# Exports LEPTON_OCTOKIT_SPEC=<path to generated/api.github.com.json>.

lepton_octokit_major=23
lepton_octokit_dir="$ROOT/.cache/node/octokit"
lepton_octokit_spec="$lepton_octokit_dir/node_modules/@octokit/openapi/generated/api.github.com.json"

lepton_octokit_fail() {
  echo "scripts/deps/10-octokit.sh: $*" >&2
  exit 1
}

lepton_octokit_installed=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
  "$lepton_octokit_dir/node_modules/@octokit/openapi/package.json" 2>/dev/null | head -n 1 || true)
if [ ! -s "$lepton_octokit_spec" ] || [ "${lepton_octokit_installed%%.*}" != "$lepton_octokit_major" ]; then
  command -v npm >/dev/null 2>&1 || lepton_octokit_fail "npm is missing: installing @octokit/openapi needs Node.js with npm"
  echo "scripts/deps/10-octokit.sh: installing @octokit/openapi@$lepton_octokit_major into $lepton_octokit_dir" >&2
  mkdir -p "$lepton_octokit_dir"
  npm install --prefix "$lepton_octokit_dir" --no-audit --no-fund --loglevel=error \
    "@octokit/openapi@$lepton_octokit_major" >&2 ||
    lepton_octokit_fail "npm install @octokit/openapi@$lepton_octokit_major failed"
  [ -s "$lepton_octokit_spec" ] || lepton_octokit_fail "@octokit/openapi was installed but $lepton_octokit_spec is missing"
fi
export LEPTON_OCTOKIT_SPEC="$lepton_octokit_spec"

unset lepton_octokit_major lepton_octokit_dir lepton_octokit_spec lepton_octokit_installed
unset -f lepton_octokit_fail
