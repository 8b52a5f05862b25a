"""The secrets lepton-ci keeps away from user code and out of every message.

The trust model (see docs/train.md) rests on one rule: code from a pull request (the training command,
the model server) must never see the gate's signing key or a token that can write to the forge or the
registry. A job that can run arbitrary training code and read `LEPTON_CI_SIGNING_KEY` could bless any
model, which would make the gate decorative. So every child process lepton-ci starts gets
`scrubbed_environ()`: the current environment less the variables named here, except those a project
explicitly passes through (`train.env_passthrough`).

The list is explicit rather than a pattern such as `*_TOKEN`: a training command may legitimately need
its own credentials (a data bucket, an experiment tracker), and silently dropping those would be a worse
surprise than a documented list. Names that start with `LEPTON_CI_SIGNING_KEY` are all secret (the key,
the key file, a passphrase), so a new signing option cannot be forgotten here.

This module is imported by the CLI entry point before any command runs, so it imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

# Every variable below is read by lepton-ci itself, or is a CI-provided credential that would let user
# code act as the pipeline. Keep it in sync with lepton_ci/forge/detect.py (GITHUB_TOKEN_VARS,
# GITLAB_TOKEN_VARS), lepton_ci/signing.py and the registry/deploy backends; tests/unit/test_secrets.py
# checks the token lists in detect.py against it.
SECRET_ENV_VARS: tuple[str, ...] = (
    # the gate's signing key (private) and its file form
    "LEPTON_CI_SIGNING_KEY",
    "LEPTON_CI_SIGNING_KEY_FILE",
    "LEPTON_CI_SIGNING_KEY_PASSPHRASE",
    # forge tokens lepton-ci reads to post comments and statuses (forge/detect.py)
    "LEPTON_CI_GITHUB_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "LEPTON_CI_GITLAB_TOKEN",
    "GITLAB_TOKEN",
    # CI-issued credentials: the job token, the runner's cache/artifact token, OIDC token requests
    "CI_JOB_TOKEN",
    "CI_JOB_JWT",
    "CI_JOB_JWT_V1",
    "CI_JOB_JWT_V2",
    "CI_REGISTRY_PASSWORD",
    "CI_DEPLOY_PASSWORD",
    "CI_DEPENDENCY_PROXY_PASSWORD",
    "CI_REPOSITORY_URL",  # https://gitlab-ci-token:<CI_JOB_TOKEN>@host/...: carries the job token
    "ACTIONS_RUNTIME_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    # registry and deploy-target credentials
    "LEPTON_REGISTRY_PASSWORD",
    "LEPTON_CI_REGISTRY_KEY",  # encryption at rest of registry blobs
    "LEPTON_CI_REGISTRY_PASSWORD",
    "LEPTON_API_TOKEN",
    "LEPTON_WORKSPACE_TOKEN",  # leptonai's own variable, the lepton target's default token
)

#: Any variable whose name starts with this is secret (LEPTON_CI_SIGNING_KEY and all its variants).
#: The CI wrappers pass the `signing-key` input under these names before exporting it (an input wins over
#: the job's variable only when it is not empty), so they are the key too.
SECRET_PREFIXES: tuple[str, ...] = ("LEPTON_CI_SIGNING_KEY", "LEPTON_INPUT_SIGNING_KEY", "LEPTON_CI_INPUT_SIGNING_KEY")

# Variables whose value is a path or URL, not key material: stripped from children (the path leads to
# the key), but their value is not masked, since masking a path would only garble error messages.
_NOT_MASKED = frozenset({"LEPTON_CI_SIGNING_KEY_FILE", "ACTIONS_ID_TOKEN_REQUEST_URL", "CI_REPOSITORY_URL"})


def is_secret_name(name: str) -> bool:
    """True for a variable lepton-ci never hands to a child process."""
    return name in SECRET_ENV_VARS or name.startswith(SECRET_PREFIXES)


def scrubbed_environ(passthrough: Iterable[str] = (), base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default: os.environ) without the secret variables, for a child process.

    Names in `passthrough` are kept even if secret: the documented escape hatch for a training command
    that really needs one (train.env_passthrough). Passing a name through is the project's decision,
    visible in lepton.yml and so in review.
    """
    env = os.environ if base is None else base
    keep = {str(name) for name in passthrough}
    return {k: v for k, v in env.items() if k in keep or not is_secret_name(k)}


def secret_values(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """name → value of every secret variable that is set (and holds key material) in `base`."""
    env = os.environ if base is None else base
    return {k: v for k, v in env.items() if v and is_secret_name(k) and k not in _NOT_MASKED}


def register_env_secrets(base: Mapping[str, str] | None = None) -> list[str]:
    """Register every present secret's value for masking, so no message lepton-ci prints can hold one.

    Returns the names registered (never the values). `register_secret` also registers each line of a
    multi-line value (a PEM key), so a message quoting one line of the key is masked too.
    """
    from lepton_ci.forge.http import register_secret  # stdlib-only at import time: the CLI stays light

    names = []
    for name, value in secret_values(base).items():
        register_secret(value)
        names.append(name)
    return names
