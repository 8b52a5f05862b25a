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
from tests.support.keys import PRIVATE_PEM, PUBLIC_PEM
from tests.support.oci_faults import FaultProxy
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


def test_a_history_update_lost_to_a_racing_writer_is_reported_by_check(
    tmp_path: Path, server: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No conditional tag writes in OCI: two writers without the CI lock can both append to the history
    they read, and the second PUT hides the first. The per-write tags let `check` see it."""
    a = open_registry(server.url(), tmp_path)
    a.push(NAME, files(tmp_path, model__bin=b"one"), {"run": {"run_id": "r1"}}, aliases=["production"])
    a.push(NAME, files(tmp_path / "2", model__bin=b"two"), {"run": {"run_id": "r2"}})
    assert a.check() == []
    b = open_registry(server.url(), tmp_path)
    stale = b.storage.read_history(NAME)
    a.move_alias(NAME, "production", 2, reason="writer A")
    monkeypatch.setattr(b.storage, "read_history", lambda name: stale)  # B read before A wrote
    b.move_alias(NAME, "staging", 1, reason="writer B")
    monkeypatch.undo()
    problems = a.check()
    assert [p.where for p in problems] == [f"{NAME} history"], problems
    assert "is not a prefix of today's history" in problems[0].message
    # With the lock (the documented setup) the same two moves leave a clean registry.
    c = open_registry(server.url("team/other"), tmp_path)
    c.push(NAME, files(tmp_path / "3", model__bin=b"three"), {}, aliases=["production"])
    c.move_alias(NAME, "staging", 1)
    assert c.check() == []


def _tag_and_promote(url: str, work: str, i: int, lock: bool = True) -> int:
    """One CI job: register its own model file as the next version, then point production at it. With
    `lock=False` the job runs as if the CI's lock were missing (the local flock is switched off)."""
    import contextlib

    reg = open_registry(url, Path(work))
    if not lock:
        reg.storage.lock = lambda name: contextlib.nullcontext()  # type: ignore[method-assign]
    src = Path(work) / f"job{i}" / "model.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(f"weights of job {i}".encode())
    version = reg.push(NAME, [("model.bin", src)], {"run": {"run_id": f"job{i}"}}, aliases=["candidate"]).version
    reg.move_alias(NAME, "production", version.version, reason=f"job {i}")
    return version.version


def test_sixteen_concurrent_tag_and_promote_processes_lose_nothing(tmp_path: Path, server: RegistryServer) -> None:
    import concurrent.futures
    import multiprocessing

    url = server.url()
    with concurrent.futures.ProcessPoolExecutor(16, mp_context=multiprocessing.get_context("spawn")) as pool:
        versions = list(pool.map(_tag_and_promote, [url] * 16, [str(tmp_path)] * 16, range(16)))
    assert sorted(versions) == list(range(1, 17))  # unique, gapless version numbers
    reg = open_registry(url, tmp_path)
    history = reg.history(NAME)
    assert len(history) == 32 and [e.seq for e in history] == list(range(1, 33))  # no lost update
    assert {e.to for e in history if e.alias == "production"} == set(range(1, 17))
    assert reg.aliases(NAME)["production"] == [e.to for e in history if e.alias == "production"][-1]
    assert reg.check() == []
    for v in range(1, 17):
        run_id = reg.get(NAME, v).metadata["run"]["run_id"]
        assert (reg.fetch(NAME, v, tmp_path / f"out{v}") / "model.bin").read_bytes() == f"weights of {run_id.replace('job', 'job ')}".encode()


def _racing_job(url: str, work: str, i: int) -> tuple[int, str] | str:
    try:
        _tag_and_promote(url, work, i, lock=False)
    except (RegistryError, TransientError) as exc:  # a writer may trip over another's half-written state
        return str(exc)
    reg = open_registry(url, Path(work))
    mine = [v for v in reg.storage.version_numbers(NAME)]
    return (len(mine), f"job{i}")


def test_without_the_lock_check_reports_the_forks_racing_writers_cause(tmp_path: Path, server: RegistryServer) -> None:
    import concurrent.futures
    import multiprocessing

    url = server.url()
    with concurrent.futures.ProcessPoolExecutor(16, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_racing_job, [url] * 16, [str(tmp_path)] * 16, range(16)))
    reg = open_registry(url, tmp_path)
    storage: OciStorage = reg.storage  # type: ignore[assignment]
    tags = storage._tags(NAME)
    numbers = [int(t.split("-")[0][1:]) for t in tags if t.startswith("v")]
    forked_versions = len(numbers) != len(set(numbers))
    try:
        events = len(reg.history(NAME))
    except RegistryError:
        events = -1  # the chain itself broke
    registered = len(numbers)
    lost_events = events != 2 * registered
    problems = reg.check()
    if forked_versions or lost_events:
        assert problems, f"{registered} versions, {events} events, and check saw nothing"
        if forked_versions:
            assert any("two tags" in p.message for p in problems), problems
        if lost_events:
            assert any(p.where.startswith(f"{NAME} history") for p in problems), problems
    else:  # the writers happened not to overlap: then there is nothing to report
        assert problems == []


def test_registry_stopped_mid_push_fails_in_one_line_or_completes_and_loses_nothing(tmp_path: Path) -> None:
    """The server is stopped (SIGTERM with a drain timeout, as a service restart does) at a random moment of a
    push and restarted,
    TRIALS times. Each push either completes or fails with one line; afterwards `check` finds no error and every
    acknowledged version reads back byte for byte. (A SIGKILL can leave the filesystem driver's files half
    written, a tag without its manifest: damage `check` reports as an error, as it should.)"""
    import random
    import signal
    import threading
    import time

    trials = int(os.environ.get("LEPTON_OCI_KILL_TRIALS", "50"))
    rng = random.Random(int(os.environ.get("LEPTON_OCI_KILL_SEED", "7")))
    # Stopped as a service manager restarts it: SIGTERM, requests in flight finish (http.draintimeout). A
    # registry killed mid-write can corrupt its own tag files (its filesystem driver writes them in place);
    # lepton-ci passes over a tag whose write never completed (Interrupted), but cannot repair the server.
    srv = RegistryServer(tmp_path / "registry", drain_s=5).start()
    acknowledged: dict[int, bytes] = {}
    failures: list[str] = []
    try:
        for trial in range(trials):
            content = rng.randbytes(rng.randint(200_000, 2_500_000))
            src = tmp_path / "src" / f"t{trial}" / "model.bin"
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(content)
            reg = open_registry(srv.url(), tmp_path)
            reg.storage.client = OciClient(parse_oci_url(srv.url()), credentials=None, retries=1, chunk_size=512 * 1024)  # type: ignore[attr-defined]
            outcome: dict[str, object] = {}

            def push() -> None:
                try:
                    outcome["version"] = reg.push(NAME, [("model.bin", src)], {"run": {"run_id": f"t{trial}"}},
                                                  aliases=["candidate"]).version.version
                except (RegistryError, TransientError) as exc:
                    outcome["error"] = str(exc)

            worker = threading.Thread(target=push)
            worker.start()
            time.sleep(rng.uniform(0, 0.25))
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait()
            worker.join(120)
            assert not worker.is_alive()
            srv.start()
            if "version" in outcome:
                acknowledged[int(outcome["version"])] = content  # type: ignore[call-overload]
            else:
                message = str(outcome["error"])
                assert "\n" not in message and message, message
                failures.append(message)
        reg = open_registry(srv.url(), tmp_path)
        assert [p for p in reg.check() if p.severity == "error"] == []
        for number, content in acknowledged.items():
            out = reg.fetch(NAME, number, tmp_path / "out" / str(number))
            assert (out / "model.bin").read_bytes() == content
        assert failures, "no stop landed during a push: the test did not test anything"
    finally:
        srv.stop()


def test_registry_copy_moves_a_file_registry_to_oci_byte_for_byte(tmp_path: Path, server: RegistryServer) -> None:
    project = make_project(tmp_path / "proj")
    env = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}
    for acc in ("0.9", "0.92"):
        assert cli("train", "-p", f"acc={acc}", cwd=project, env=env).code == 0
        assert cli("gate", cwd=project, env=env).code == 0
        assert cli("tag", cwd=project, env=env).code == 0
    assert cli("registry", "promote", "1", "production", cwd=project).code == 0
    assert cli("registry", "promote", "2", "production", cwd=project).code == 0
    src = open_registry("file://.lepton/registry", project)
    r = cli("registry", "copy", "file://.lepton/registry", server.url(), cwd=project)
    assert r.code == 0 and "toy: 2 version(s) and 4 alias move(s) copied" in r.out, r
    dst = open_registry(server.url(), project)
    for v in (1, 2):
        assert dst.get("toy", v).digest == src.get("toy", v).digest
        assert dst.storage.read_manifest("toy", v) == src.storage.read_manifest("toy", v)
    assert [e.to_dict() for e in dst.history("toy")] == [e.to_dict() for e in src.history("toy")]
    assert dst.aliases("toy") == {"candidate": 2, "production": 2}
    # The gate signatures verify against the copy: deploy-side checks see the same bytes.
    r = cli("registry", "-r", server.url(), "check", cwd=project, env={"LEPTON_CI_PUBLIC_KEY": PUBLIC_PEM})
    assert r.code == 0 and "OK" in r.out, r
    # Copying again is refused, never merged.
    assert_one_line_error(cli("registry", "copy", "file://.lepton/registry", server.url(), cwd=project), 2,
                          "already exists")


def test_tag_from_registers_what_oras_pushed_and_refuses_what_escapes(tmp_path: Path, server: RegistryServer) -> None:
    import oras.client

    work = tmp_path / "oras"
    (work / "weights").mkdir(parents=True)
    (work / "weights" / "model.safetensors").write_bytes(os.urandom(50_000))
    (work / "config.json").write_bytes(b'{"layers": 4}')
    client = oras.client.OrasClient(hostname=server.host, insecure=True)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        client.push(target=f"{server.host}/imports/external:1.0", files=["weights/model.safetensors", "config.json"])
    finally:
        os.chdir(cwd)
    project = make_project(tmp_path / "proj")
    env = {"LEPTON_CI_REGISTRY": server.url()}
    source = f"oci://{server.host}/imports/external:1.0"
    assert_one_line_error(cli("tag", "--from", source, cwd=project, env=env), 2, "tag.require_gate")
    with open(project / "lepton.yml", "a") as f:
        f.write("tag:\n  require_gate: false\n")
    r = cli("tag", "--from", source, "--json", cwd=project, env=env)
    assert r.code == 0, r
    mv = json.loads(r.out)
    assert {a["path"] for a in mv["artifacts"]} == {"model.safetensors", "config.json"}  # oras titles by basename
    assert mv["metadata"]["source"]["oci"] == source and mv["metadata"]["source"]["manifest_digest"].startswith("sha256:")
    out = open_registry(server.url(), project).fetch("toy", 1, tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == (work / "weights" / "model.safetensors").read_bytes()
    # by digest, too
    by_digest = source.rsplit(":", 1)[0] + "@" + mv["metadata"]["source"]["manifest_digest"]
    assert cli("tag", "--from", by_digest, cwd=project, env=env).code == 0

    # A manifest whose layer names a path outside the destination is refused before anything is written.
    oci = OciClient(parse_oci_url(server.url("imports/evil")), credentials=None)
    blob = oci.push_bytes("imports/evil", b"pwned")
    empty = oci.push_bytes("imports/evil", b"{}")
    evil = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": 5,
                        "annotations": {"org.opencontainers.image.title": "../../evil.sh"}}]}
    oci.put_manifest("imports/evil", "1.0", json.dumps(evil).encode())
    r = cli("tag", "--from", f"oci://{server.host}/imports/evil:1.0", cwd=project, env=env)
    assert_one_line_error(r, 2, "../../evil.sh", "refused")
    assert not (tmp_path / "evil.sh").exists() and not (project.parent / "evil.sh").exists()
    assert open_registry(server.url(), project).version_numbers("toy") == [1, 2]


# --- a misbehaving server (a fault proxy in front of the real one) -----------------------------------------


@pytest.fixture()
def proxy(server: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://{server.host}") as p:
        yield p


def quick(url: str, tmp_path: Path) -> OciStorage:
    """A registry whose client retries fast (the retries are what is tested, not the waiting)."""
    reg = open_registry(url, tmp_path)
    storage: OciStorage = reg.storage  # type: ignore[assignment]
    storage.client = OciClient(parse_oci_url(url), credentials=None, retries=2)
    storage.client.session.adapters["http://"].max_retries.backoff_factor = 0  # type: ignore[attr-defined]
    return storage


def test_5xx_and_429_are_retried_then_transient_never_absent(tmp_path: Path, proxy: FaultProxy) -> None:
    reg = open_registry(proxy.url(), tmp_path)
    reg.push(NAME, files(tmp_path, model__bin=b"w"), {}, aliases=["production"])
    storage = quick(proxy.url(), tmp_path)
    proxy.fail(r"GET /v2/team/models/digits/tags/list", status=503, headers={"Retry-After": "0"})
    assert storage.version_numbers(NAME) == [1]  # one 503, then the retry answers
    proxy.fail(r"GET /v2/team/models/digits/tags/list", status=429, headers={"Retry-After": "0"})
    assert storage.version_numbers(NAME) == [1]
    proxy.fail(r"GET /v2/team/models/digits/tags/list", status=500, times=10)
    with pytest.raises(TransientError, match="answered 500"):
        storage.version_numbers(NAME)


@pytest.mark.parametrize(
    "fault,error,match",
    [
        ({"status": 200, "body": b"<html>not json</html>"}, RegistryError, "not its JSON list"),
        ({"status": 200, "body": b'{"tags": [1, 2]}'}, RegistryError, "not its JSON list"),
        ({"status": 404, "body": b"Not Found"}, RegistryError, "answered 404"),  # a proxy's bare 404: not "absent"
        ({"status": 401, "body": b""}, RegistryError, "refused anonymous access"),
        ({"status": 403, "body": b'{"errors": [{"code": "DENIED", "message": "no"}]}'}, RegistryError, "denied"),
    ],
    ids=["html", "wrong-types", "bare-404", "401-no-challenge", "403"],
)
def test_garbage_and_refusals_are_errors_never_an_empty_registry(
    tmp_path: Path, proxy: FaultProxy, fault: dict, error: type, match: str
) -> None:
    reg = open_registry(proxy.url(), tmp_path)
    reg.push(NAME, files(tmp_path, model__bin=b"w"), {}, aliases=["production"])
    storage = quick(proxy.url(), tmp_path)
    proxy.fail(r"GET /v2/team/models/digits/tags/list", **fault)
    with pytest.raises(error, match=match) as info:
        storage.version_numbers(NAME)
    assert not isinstance(info.value, NotFound)


def test_a_manifest_whose_bytes_do_not_match_its_digest_is_refused(tmp_path: Path, proxy: FaultProxy) -> None:
    reg = open_registry(proxy.url(), tmp_path)
    mv = reg.push(NAME, files(tmp_path, model__bin=b"w"), {}).version
    tag = f"v1-{mv.digest.removeprefix('sha256:')[:12]}"
    real = OciClient(parse_oci_url(proxy.url()), credentials=None).get_manifest("team/models/digits", tag)
    assert real is not None
    forged = real[0].replace(b'"v1"', b'"v9"')
    proxy.fail(rf"GET /v2/team/models/digits/manifests/{tag}", status=200, body=forged,
               headers={"Content-Type": real[1], "Docker-Content-Digest": real[2]})
    with pytest.raises(RegistryError, match="do not match the registry's own digest"):
        quick(proxy.url(), tmp_path).read_manifest(NAME, 1)


def test_a_download_cut_mid_blob_resumes_with_a_range_request(tmp_path: Path, proxy: FaultProxy) -> None:
    reg = open_registry(proxy.url(), tmp_path)
    big = os.urandom(3 * 1024 * 1024)
    mv = reg.push(NAME, files(tmp_path, model__bin=big), {}).version
    blob = mv.artifacts[0]["sha256"]
    proxy.fail(rf"GET /v2/team/models/digits/blobs/sha256:{blob}", cut_after=1_000_000)
    proxy.fail(rf"GET /v2/team/models/digits/blobs/sha256:{blob}", cut_after=700_000)
    out = reg.fetch(NAME, 1, tmp_path / "out")
    assert (out / "model.bin").read_bytes() == big
    ranges = [r["range"] for r in proxy.requests if blob in r["line"] and r["line"].startswith("GET")]
    assert ranges[0] is None and ranges[1] == "bytes=1000000-" and ranges[2] == "bytes=1700000-", ranges


def test_referrers_fall_back_to_the_tag_schema_on_a_registry_without_the_api(tmp_path: Path, server: RegistryServer) -> None:
    reg = open_registry(server.url(), tmp_path)
    mv = reg.push(NAME, files(tmp_path, model__bin=b"w"), {})
    repo = "team/models/digits"
    client = OciClient(parse_oci_url(server.url()), credentials=None)
    tag = f"v1-{mv.version.digest.removeprefix('sha256:')[:12]}"
    data, media, digest = client.get_manifest(repo, tag)
    subject = {"mediaType": media, "digest": digest, "size": len(data)}
    empty = client.push_bytes(repo, b"{}")
    config = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}
    for kind in ("application/vnd.example.sbom", "application/vnd.example.signature"):
        art = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": kind,
               "config": config, "layers": []}
        client.attach(repo, subject, art)
    client.attach(repo, subject, art)  # attaching the same artifact again lists it once
    found = client.referrers(repo, digest)
    assert sorted(m["artifactType"] for m in found) == ["application/vnd.example.sbom", "application/vnd.example.signature"]
    assert [m["artifactType"] for m in client.referrers(repo, digest, "application/vnd.example.sbom")] == [
        "application/vnd.example.sbom"
    ]
    assert client.fallback_tag(digest) in client.list_tags(repo)
    assert reg.check() == []  # the fallback tag is not mistaken for a version


def test_a_registry_without_a_catalog_is_checked_model_by_model(tmp_path: Path, proxy: FaultProxy) -> None:
    """GHCR and Docker Hub keep their catalog to themselves: `registry check` says to name the model, and
    `registry -m NAME check` checks it."""
    project = make_project(tmp_path / "proj")
    reg = open_registry(proxy.url(), tmp_path)
    reg.push("toy", files(tmp_path, model__bin=b"w"), {}, aliases=["production"])
    proxy.fail(r"GET /v2/_catalog", status=403, body=b'{"errors": [{"code": "DENIED", "message": "no catalog"}]}',
               times=2)
    assert_one_line_error(cli("registry", "-r", proxy.url(), "check", cwd=project), 2, "registry -m NAME check")
    r = cli("registry", "-r", proxy.url(), "-m", "toy", "check", cwd=project)
    assert r.code == 0 and "OK" in r.out, r


def test_a_registry_that_caps_request_bodies_gets_the_file_in_chunks(
    tmp_path: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lepton_ci.oci.client as client_module

    monkeypatch.setattr(client_module, "CHUNK_FALLBACK", 1024 * 1024)
    reg = open_registry(proxy.url(), tmp_path)
    big = os.urandom(2 * 1024 * 1024 + 7)
    proxy.fail(r"PUT /v2/team/models/digits/blobs/uploads/", status=413, body=b"Request Entity Too Large")
    reg.push(NAME, files(tmp_path, model__bin=big), {})
    patches = [r for r in proxy.requests if r["line"].startswith("PATCH /v2/team/models/digits/blobs/uploads/")]
    assert len(patches) == 3  # 1 MiB, 1 MiB, 7 bytes
    assert (reg.fetch(NAME, 1, tmp_path / "out") / "model.bin").read_bytes() == big


def test_cross_repository_mount_links_a_blob_without_sending_it(tmp_path: Path, server: RegistryServer) -> None:
    client = OciClient(parse_oci_url(server.url()), credentials=None)
    data = os.urandom(100_000)
    digest = client.push_bytes("team/models/a", data)
    assert client.mount_blob("team/models/b", digest, "team/models/a") is True
    assert client.read_blob("team/models/b", digest, 1 << 20) == data
    missing = "sha256:" + "0" * 64
    assert client.mount_blob("team/models/b", missing, "team/models/a") is False  # a session opened, then cancelled
    assert client.blob_size("team/models/b", missing) is None
