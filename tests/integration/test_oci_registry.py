"""The oci:// registry against the real CNCF distribution server on loopback: auth (anonymous, htpasswd
basic auth, the bearer-token flow with the registry verifying real JWTs, docker config and credential
helpers), failures that must never read as "not there", interoperability with oras-py, chunked uploads,
and the CLI steps. The shared registry suite (tests/unit/test_registry.py) runs against this backend too.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton_ci.errors import NotFound, RegistryError, TransientError
from lepton_ci.oci.client import OciClient
from lepton_ci.oci.reference import parse_oci_url
from lepton_ci.registry import open_registry
from lepton_ci.registry.oci import MODEL_ARTIFACT, WEIGHT, OciStorage
from tests.e2e.helpers import assert_one_line_error, cli, make_project
from tests.support.keys import PRIVATE_PEM
from tests.support.oci_registry import PASSWORD, USER, RegistryServer, free_port
from tests.support.oci_token import TokenService

NAME = "digits"
CREDS = {"LEPTON_REGISTRY_USER": USER, "LEPTON_REGISTRY_PASSWORD": PASSWORD}


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "registry") as s:
        yield s


@pytest.fixture()
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("LEPTON_REGISTRY_USER", "LEPTON_REGISTRY_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def files(tmp_path: Path, **content: bytes) -> list[tuple[str, Path]]:
    out = []
    for rel, data in content.items():
        src = tmp_path / "src" / rel.replace("__", ".")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        out.append((rel.replace("__", "."), src))
    return out


def roundtrip(url: str, tmp_path: Path) -> None:
    reg = open_registry(url, tmp_path)
    mv = reg.push(NAME, files(tmp_path, model__bin=b"weights"), {"run": {"run_id": "r1"}}, aliases=["production"]).version
    out = reg.fetch(NAME, "production", tmp_path / "out")
    assert (out / "model.bin").read_bytes() == b"weights" and reg.get(NAME, 1).digest == mv.digest


# --- auth ------------------------------------------------------------------------------------------------


def test_htpasswd_basic_auth_from_env_docker_config_and_a_credential_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_credentials: None
) -> None:
    with RegistryServer(tmp_path / "registry", htpasswd=True) as srv:
        url = srv.url()
        with pytest.raises(RegistryError, match="refused anonymous access \\(401\\).*LEPTON_REGISTRY_USER") as info:
            open_registry(url, tmp_path).version_numbers(NAME)
        assert not isinstance(info.value, NotFound)

        monkeypatch.setenv("LEPTON_REGISTRY_USER", USER)
        monkeypatch.setenv("LEPTON_REGISTRY_PASSWORD", "wrong-password-123")
        with pytest.raises(RegistryError, match="refused the credentials from LEPTON_REGISTRY_USER") as info:
            open_registry(url, tmp_path).version_numbers(NAME)
        assert "wrong-password-123" not in str(info.value)

        monkeypatch.setenv("LEPTON_REGISTRY_PASSWORD", PASSWORD)
        roundtrip(url, tmp_path / "env")

        # ~/.docker/config.json as `docker login` writes it
        monkeypatch.delenv("LEPTON_REGISTRY_USER")
        monkeypatch.delenv("LEPTON_REGISTRY_PASSWORD")
        config_dir = tmp_path / "docker-config"
        config_dir.mkdir()
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (config_dir / "config.json").write_text(json.dumps({"auths": {srv.host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
        assert open_registry(url, tmp_path).version_numbers(NAME) == [1]

        # a credential helper (the docker credential protocol: host on stdin, JSON on stdout)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        helper = bin_dir / "docker-credential-lepton-test"
        helper.write_text(
            f"#!{sys.executable}\nimport json, sys\nhost = sys.stdin.read().strip()\n"
            f"print(json.dumps({{'ServerURL': host, 'Username': {USER!r}, 'Secret': {PASSWORD!r}}}))\n"
        )
        helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
        (config_dir / "config.json").write_text(json.dumps({"credHelpers": {srv.host: "lepton-test"}}))
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        assert open_registry(url, tmp_path).version_numbers(NAME) == [1]
        (config_dir / "config.json").write_text(json.dumps({"credHelpers": {srv.host: "missing-helper"}}))
        with pytest.raises(RegistryError, match="docker-credential-missing-helper is not on PATH"):
            open_registry(url, tmp_path).version_numbers(NAME)


def test_bearer_token_flow_with_the_registry_verifying_the_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_credentials: None
) -> None:
    with TokenService(tmp_path / "tokens", {USER: PASSWORD}) as tokens, RegistryServer(
        tmp_path / "registry", token_auth=tokens.registry_auth()
    ) as srv:
        with pytest.raises(RegistryError, match="token service refused anonymous access"):
            open_registry(srv.url(), tmp_path).version_numbers(NAME)
        assert [r["user"] for r in tokens.requests] == [None]
        monkeypatch.setenv("LEPTON_REGISTRY_USER", USER)
        monkeypatch.setenv("LEPTON_REGISTRY_PASSWORD", PASSWORD)
        roundtrip(srv.url(), tmp_path)
        asked = tokens.requests[1:]
        scopes = {s for r in asked for s in r["query"].get("scope", [])}
        assert "repository:team/models/digits:pull,push" in scopes and "repository:team/models/digits:pull" in scopes
        assert {r["user"] for r in asked} == {USER}
        assert len(asked) <= 6, asked  # tokens are cached per scope, not fetched per request


# --- failures are never "not there" ----------------------------------------------------------------------


def test_an_unreachable_or_stopped_registry_is_transient_never_a_first_run(tmp_path: Path, server: RegistryServer) -> None:
    with pytest.raises(TransientError, match="cannot reach registry"):
        open_registry(f"oci://127.0.0.1:{free_port()}/team/models", tmp_path)
    reg = open_registry(server.url(), tmp_path)
    reg.push(NAME, files(tmp_path, model__bin=b"w"), {}, aliases=["production"])
    server.stop()
    for call in (lambda: reg.get(NAME, "production"), lambda: reg.version_numbers(NAME), lambda: reg.aliases(NAME)):
        with pytest.raises(TransientError):
            call()


def test_gate_fails_closed_on_an_unreachable_oci_registry(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    env = {"LEPTON_CI_REGISTRY": f"oci://127.0.0.1:{free_port()}/team/models", "LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}
    assert cli("train", cwd=project, env=env).code == 0
    r = cli("gate", cwd=project, env=env)
    assert_one_line_error(r, 2, "cannot reach registry 127.0.0.1")
    assert "first run" not in r.out + r.err and not (project / ".lepton/gate.json").exists()


def test_version_tags_are_never_overwritten_and_a_fork_is_reported(tmp_path: Path, server: RegistryServer) -> None:
    reg = open_registry(server.url(), tmp_path)
    v1 = reg.push(NAME, files(tmp_path, model__bin=b"one"), {"run": {"run_id": "r1"}}).version
    storage: OciStorage = reg.storage  # type: ignore[assignment]
    assert storage.create_manifest(NAME, 1, b"{}") is False
    # Two writers without the CI lock: the second registered its own v1 next to the first.
    repo = storage._repo(NAME)
    data, media, _ = storage.client.get_manifest(repo, f"v1-{v1.digest.removeprefix('sha256:')[:12]}")
    storage.client.put_manifest(repo, "v1-0123456789ab", data, media)
    with pytest.raises(RegistryError, match="version 1 has two tags"):
        reg.get(NAME, 1)
    assert any("two tags" in p.message for p in reg.check())


def test_a_foreign_manifest_under_a_version_tag_is_refused(tmp_path: Path, server: RegistryServer) -> None:
    reg = open_registry(server.url(), tmp_path)
    reg.push(NAME, files(tmp_path, model__bin=b"one"), {})
    storage: OciStorage = reg.storage  # type: ignore[assignment]
    repo = storage._repo(NAME)
    empty = storage.client.push_bytes(repo, b"{}")
    foreign = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}, "layers": []}
    storage.client.put_manifest(repo, "v2-aaaaaaaaaaaa", json.dumps(foreign).encode())
    with pytest.raises(RegistryError, match="not a lepton-ci artifact"):
        reg.get(NAME, 2)


# --- layout and interoperability ------------------------------------------------------------------------


def test_a_version_is_a_modelpack_artifact_that_oras_pulls_byte_identical(tmp_path: Path, server: RegistryServer) -> None:
    import oras.client

    reg = open_registry(server.url(), tmp_path)
    content = {"model__joblib": os.urandom(300_000), "config__json": b'{"C": 1.0}', "README__md": b"# digits\n"}
    mv = reg.push(NAME, files(tmp_path, **content), {"model_file": "model.joblib", "framework": "sklearn"},
                  aliases=["production"]).version
    storage: OciStorage = reg.storage  # type: ignore[assignment]
    data, _, _ = storage.client.get_manifest(storage._repo(NAME), "production")
    manifest = json.loads(data)
    assert manifest["artifactType"] == MODEL_ARTIFACT
    kinds = {x.get("annotations", {}).get("org.cncf.model.filepath"): x["mediaType"] for x in manifest["layers"]}
    assert kinds["model.joblib"] == WEIGHT and kinds["README.md"].endswith("doc.v1.raw")
    config = json.loads(storage.client.read_blob(storage._repo(NAME), manifest["config"]["digest"], 1 << 20))
    assert config["descriptor"]["version"] == "v1" and config["lepton-ci"]["digest"] == mv.digest

    out = tmp_path / "oras-out"
    client = oras.client.OrasClient(hostname=server.host, insecure=True)
    client.pull(target=f"{server.host}/team/models/{NAME}:production", outdir=str(out))
    for rel, data in content.items():
        assert (out / rel.replace("__", ".")).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "lepton-ci-version.json", "model.joblib"]
    assert json.loads((out / "lepton-ci-version.json").read_text())["digest"] == mv.digest


def test_chunked_upload_and_an_unchanged_push_sends_no_blob_bytes(tmp_path: Path, server: RegistryServer) -> None:
    reg = open_registry(server.url(), tmp_path)
    storage: OciStorage = reg.storage  # type: ignore[assignment]
    storage.client = OciClient(parse_oci_url(server.url()), credentials=None, chunk_size=1024 * 1024)
    sent: list[tuple[str, int]] = []
    real = storage.client.session.request

    def counting(method: str, url: str, **kw: object) -> object:
        body = kw.get("data")
        size = len(body) if isinstance(body, bytes | bytearray) else int(kw.get("headers", {}).get("Content-Length", 0) or 0)  # type: ignore[union-attr]
        if method in ("PATCH", "PUT") and "/blobs/uploads/" in url:
            sent.append((method, size))
        return real(method, url, **kw)

    storage.client.session.request = counting  # type: ignore[method-assign]
    big = os.urandom(3 * 1024 * 1024 + 12345)
    reg.push(NAME, files(tmp_path, model__bin=big), {"run": {"run_id": "r1"}})
    patches = [s for m, s in sent if m == "PATCH"]
    assert len(patches) == 4 and sum(patches) == len(big)
    assert (reg.fetch(NAME, 1, tmp_path / "out") / "model.bin").read_bytes() == big
    sent.clear()
    result = reg.push(NAME, files(tmp_path, model__bin=big), {"run": {"run_id": "r1"}})
    assert result.created is False and sent == []


# --- the CLI steps --------------------------------------------------------------------------------------


def test_cli_tag_gate_and_registry_commands_against_oci(tmp_path: Path, server: RegistryServer) -> None:
    project = make_project(tmp_path / "proj")
    env = {"LEPTON_CI_REGISTRY": server.url(), "LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}
    assert cli("train", "-p", "acc=0.9", cwd=project, env=env).code == 0
    r = cli("gate", cwd=project, env=env)
    assert r.code == 0 and "baseline: none (first run: no 'production' in the registry yet)" in r.out, r
    assert cli("tag", cwd=project, env=env).code == 0
    assert cli("registry", "promote", "1", "production", cwd=project, env=env).code == 0
    assert cli("train", "-p", "acc=0.92", cwd=project, env=env).code == 0
    r = cli("gate", cwd=project, env=env)
    assert r.code == 0 and "baseline: registry production = v1 (sha256:" in r.out, r
    assert cli("tag", cwd=project, env=env).code == 0
    rows = json.loads(cli("registry", "list", "--json", cwd=project, env=env).out)
    assert [(x["version"], x["aliases"]) for x in rows] == [(1, ["production"]), (2, ["candidate"])]
    r = cli("registry", "check", cwd=project, env=env)
    assert r.code == 0 and "OK" in r.out, r
