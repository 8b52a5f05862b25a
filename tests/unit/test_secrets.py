"""lepton_ci.secrets: which variables user code never sees, and masking of their values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lepton_ci import secrets
from lepton_ci.forge import detect
from lepton_ci.forge.http import mask, mask_secrets
from lepton_ci.secrets import SECRET_ENV_VARS, is_secret_name, register_env_secrets, scrubbed_environ, secret_values
from tests.support.keys import PRIVATE_PEM

REQUIRED = ("LEPTON_CI_SIGNING_KEY", "LEPTON_CI_SIGNING_KEY_FILE", "GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN",
            "LEPTON_CI_GITHUB_TOKEN", "LEPTON_CI_GITLAB_TOKEN", "CI_JOB_TOKEN", "ACTIONS_RUNTIME_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "LEPTON_REGISTRY_PASSWORD",
            "LEPTON_API_TOKEN")


def test_every_required_and_every_token_variable_lepton_ci_reads_is_stripped() -> None:
    from lepton_ci import signing

    read_by_code = (*detect.GITHUB_TOKEN_VARS, *detect.GITLAB_TOKEN_VARS, signing.KEY_ENV, signing.KEY_FILE_ENV)
    missing = [name for name in (*REQUIRED, *read_by_code) if not is_secret_name(name)]
    assert not missing
    assert not is_secret_name(signing.PUBLIC_KEY_ENV)  # the public key is not a secret; deploy needs it
    assert is_secret_name("LEPTON_CI_SIGNING_KEY_SOMETHING_NEW")  # the prefix covers future variants


def test_scrubbed_environ_drops_secrets_keeps_the_rest_and_honours_passthrough() -> None:
    base = {name: "s3cret-value" for name in SECRET_ENV_VARS}
    base.update(PATH="/usr/bin", HOME="/home/u", WANDB_API_KEY="own-credential", LEPTON_CI_PUBLIC_KEY="pub.pem",
                LEPTON_CI_SIGNING_KEY_PASSPHRASE="pass-phrase")
    before = dict(base)
    env = scrubbed_environ(base=base)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "WANDB_API_KEY": "own-credential",
                   "LEPTON_CI_PUBLIC_KEY": "pub.pem"}
    assert base == before  # a copy: the caller's mapping is untouched
    kept = scrubbed_environ(["CI_JOB_TOKEN", "NOT_SET"], base=base)
    assert kept["CI_JOB_TOKEN"] == "s3cret-value" and "NOT_SET" not in kept and "GITHUB_TOKEN" not in kept


def test_scrubbed_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_fromTheEnvironment01")
    monkeypatch.setenv("LEPTON_TEST_HARMLESS", "1")
    env = scrubbed_environ()
    assert "GITHUB_TOKEN" not in env and env["LEPTON_TEST_HARMLESS"] == "1"
    assert os.environ["GITHUB_TOKEN"] == "ghp_fromTheEnvironment01"


def test_register_env_secrets_masks_values_and_every_line_of_a_pem_key() -> None:
    base = {"GITHUB_TOKEN": "ghp_registeredCanary0001", "LEPTON_CI_SIGNING_KEY": PRIVATE_PEM,
            "LEPTON_CI_SIGNING_KEY_FILE": "/etc/passwd", "PATH": "/usr/bin", "LEPTON_API_TOKEN": ""}
    names = register_env_secrets(base)
    assert sorted(names) == ["GITHUB_TOKEN", "LEPTON_CI_SIGNING_KEY"]  # a path is not key material
    assert secret_values(base).keys() == {"GITHUB_TOKEN", "LEPTON_CI_SIGNING_KEY"}
    text = f"token ghp_registeredCanary0001 key {PRIVATE_PEM!r} line {PRIVATE_PEM.splitlines()[2]} at /etc/passwd"
    masked = mask_secrets(text)
    assert "ghp_registeredCanary0001" not in masked and "/etc/passwd" in masked
    for line in PRIVATE_PEM.splitlines():
        if not line.startswith("-----"):
            assert line not in masked
    assert "ghp_registeredCanary0001" not in mask(f"error: {base['GITHUB_TOKEN']}")


def test_cli_help_stays_light_with_secrets_set() -> None:
    """Registering secrets at start-up must not pull requests, numpy or jinja2 into `lepton-ci --help`."""
    env = {**os.environ, "GITHUB_TOKEN": "ghp_importtimeCanary0001", "LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "lepton_ci.cli", "--help"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    heavy = [line for line in proc.stderr.splitlines()
             if any(f" {m}" in line.split("|")[-1] for m in ("requests", "numpy", "jinja2", "urllib3"))]
    assert not heavy, heavy
    assert secrets.__name__ == "lepton_ci.secrets"
