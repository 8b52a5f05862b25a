"""The docker target's decisions that need no engine: settings, the endpoint address, where the model comes
from (an image of another version is refused), and the tar it copies into a container."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lepton_ci.deploy import docker as target
from lepton_ci.deploy import docker_engine
from lepton_ci.deploy.base import DeploySpec, get_target
from lepton_ci.errors import TrustError, UserError
from lepton_ci.records import ModelVersion

DIGEST = "sha256:" + "a" * 64


def _spec(tmp_path: Path, **options: Any) -> DeploySpec:
    mv = ModelVersion(name="Digits_2", version=3, digest=DIGEST)
    return DeploySpec(
        version=mv, model_dir=tmp_path, model_file="m.joblib", framework="sklearn", options=options, state_dir=tmp_path
    )


def test_the_target_is_in_the_table() -> None:
    assert get_target("docker").name == "docker"


def test_settings_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/x.sock")
    s = target.settings(_spec(tmp_path))
    assert s["engine"] == "unix:///tmp/x.sock" and s["port"] == 8080 and s["router"] is True
    assert s["name"] == "lepton-digits-2"
    assert target._address(s) == "127.0.0.1"


@pytest.mark.parametrize(
    "engine, address",
    [
        ("ssh://deploy@gpu-box.internal", "gpu-box.internal"),
        ("tcp://10.1.2.3:2376", "10.1.2.3"),
        ("ssh://[::1]:22", "::1"),
    ],
)
def test_a_remote_engine_s_host_is_the_endpoint_address(tmp_path: Path, engine: str, address: str) -> None:
    s = target.settings(_spec(tmp_path, docker={"engine": engine}))
    assert target._address(s) == address
    assert target._address({**s, "address": "192.0.2.7"}) == "192.0.2.7"


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"docker": {"network": "bridge"}}, "deploy.docker.network"),
        ({"docker": {"gpus": "two"}}, "deploy.docker.gpus"),
        ({"docker": {"router": False}, "slo": {"window": 5}}, "deploy.slo needs the router"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, options: dict[str, Any], needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        target.settings(_spec(tmp_path, **options))


def _image(labels: dict[str, str] | None) -> Any:
    return SimpleNamespace(attrs={"Config": {"Labels": labels}})


def test_model_source(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert target._model_source(_image(None), spec) == "copy"
    assert target._model_source(_image({"ai.lepton.model.digest": DIGEST}), spec) == "image"
    other = {
        "ai.lepton.model.digest": "sha256:" + "b" * 64,
        "ai.lepton.model.name": "x",
        "ai.lepton.model.version": "9",
    }
    with pytest.raises(TrustError, match="the image holds model x v9"):
        target._model_source(_image(other), spec)


def test_the_copy_is_read_only_and_keeps_fractional_mtimes() -> None:
    raw = docker_engine.tar_of({"m/a.bin": (b"abc", 0o444)}, ["m"])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["m"].isdir() and members["m"].mode == 0o555
        assert members["m/a.bin"].mode == 0o444 and tar.extractfile("m/a.bin").read() == b"abc"  # type: ignore[union-attr]
        assert "mtime" in members["m/a.bin"].pax_headers  # sub-second: a router sees each change


def test_an_unreachable_engine_is_one_line() -> None:
    pytest.importorskip("docker")
    with pytest.raises(UserError, match="cannot reach the Docker host unix:///nonexistent.sock"):
        docker_engine.connect("unix:///nonexistent.sock")


def _archive_container(entries: list[tuple[str, bytes | None, str]]) -> Any:
    """A created container whose get_archive('/opt/lepton/model') answers the tar `docker cp` would give:
    (name under model/, bytes or None for a directory, kind) with kind file, dir or symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return SimpleNamespace(get_archive=lambda path: (iter([raw[:100], raw[100:]]), {}))


def test_the_image_model_files_must_be_the_versions_byte_for_byte() -> None:
    import hashlib

    model, vocab = b"the gated model", b"a\nb\n"
    artifacts = [
        {"path": "m.joblib", "sha256": hashlib.sha256(model).hexdigest(), "size": len(model)},
        {"path": "sub/vocab.txt", "sha256": hashlib.sha256(vocab).hexdigest(), "size": len(vocab)},
    ]
    genuine = [("model", None, "dir"), ("model/m.joblib", model, "file"), ("model/sub", None, "dir")]
    genuine.append(("model/sub/vocab.txt", vocab, "file"))
    check = docker_engine.model_files_problem
    assert check(_archive_container(genuine), "/opt/lepton/model", artifacts) is None
    swapped = [e if e[0] != "model/m.joblib" else ("model/m.joblib", b"another model", "file") for e in genuine]
    found = check(_archive_container(swapped), "/opt/lepton/model", artifacts)
    assert found == "m.joblib differs from the version's file"
    extra = [*genuine, ("model/evil.py", b"import os", "file")]
    assert check(_archive_container(extra), "/opt/lepton/model", artifacts) == "unexpected evil.py"
    assert check(_archive_container(genuine[:2]), "/opt/lepton/model", artifacts) == "missing sub/vocab.txt"
    linked = [e if e[0] != "model/m.joblib" else ("model/m.joblib", None, "symlink") for e in genuine]
    assert check(_archive_container(linked), "/opt/lepton/model", artifacts) == (
        "/opt/lepton/model/m.joblib is not a regular file"
    )
