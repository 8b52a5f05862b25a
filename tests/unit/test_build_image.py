"""The engine-free parts of `lepton-ci build`: the reproducible model layer, image names, the base tag,
the health check's address, and the config a model-only rebuild writes (the rest is in
tests/integration/test_build.py, against a real engine and registry)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest
from lepton_ci.build.append import BaseImage, new_config, parse_image
from lepton_ci.build.context import ImageInputs, pins_from_run, serve_command
from lepton_ci.build.healthcheck import server_address
from lepton_ci.build.layer import model_layer
from lepton_ci.errors import UserError
from lepton_ci.records import ImageRecord


def _files(tmp: Path) -> dict[str, Path]:
    (tmp / "sub").mkdir()
    (tmp / "model.joblib").write_bytes(os.urandom(50_000))
    (tmp / "sub" / "vocab.txt").write_text("a\nb\n")
    return {"model.joblib": tmp / "model.joblib", "sub/vocab.txt": tmp / "sub" / "vocab.txt"}


def test_the_model_layer_is_reproducible_and_owned_by_the_server_user(tmp_path: Path) -> None:
    files = _files(tmp_path)
    os.utime(files["model.joblib"], (1, 1))
    one = model_layer(files, tmp_path / "one.tgz", "/opt/lepton/model", 10001)
    os.utime(files["model.joblib"], (2_000_000_000, 2_000_000_000))
    two = model_layer(dict(reversed(list(files.items()))), tmp_path / "two.tgz", "/opt/lepton/model", 10001)
    assert one.digest == two.digest and one.diff_id == two.diff_id and one.size == two.size
    data = (tmp_path / "one.tgz").read_bytes()
    assert one.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert one.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    with tarfile.open(tmp_path / "one.tgz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "opt/lepton/model",
        "opt/lepton/model/sub",
        "opt/lepton/model/model.joblib",
        "opt/lepton/model/sub/vocab.txt",
    ]
    assert {(m.uid, m.gid, m.mtime, m.uname) for m in members} == {(10001, 10001, 0, "")}
    assert [oct(m.mode) for m in members] == ["0o755", "0o755", "0o644", "0o644"]
    assert one.size < 50_000 * 1.01 + 2048  # tar headers and gzip framing only


@pytest.mark.parametrize(
    ("text", "repository", "reference"),
    [
        ("ghcr.io/acme/digits-serve", "acme/digits-serve", ""),
        ("127.0.0.1:5000/team/x:base-0.1.0-sklearn-0123456789ab", "team/x", "base-0.1.0-sklearn-0123456789ab"),
        ("localhost/a@sha256:" + "ab" * 32, "a", "sha256:" + "ab" * 32),
    ],
)
def test_image_names(text: str, repository: str, reference: str) -> None:
    name = parse_image(text, "--on-top-of")
    assert (name.repository, name.reference) == (repository, reference)
    assert str(name) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("python:3.11-slim", "registry host named"),
        ("acme/digits", "registry host named"),
        ("ghcr.io/Acme/x", "not a valid OCI repository name"),
        ("ghcr.io/a/x@sha256:12", "sha256:<64 hex>"),
        ("ghcr.io/a/x:bad tag", "not a valid tag"),
    ],
)
def test_bad_image_names_are_one_line(text: str, problem: str) -> None:
    with pytest.raises(UserError) as err:
        parse_image(text, "--on-top-of")
    assert problem in str(err.value) and "--on-top-of" in str(err.value)


def test_the_base_tag_names_what_the_base_is_made_of() -> None:
    one = ImageInputs("python:3.11-slim", "sklearn", ("serve", "sklearn"))
    assert one.base_tag().startswith("base-") and "-sklearn-" in one.base_tag()
    assert one.base_tag() == ImageInputs("python:3.11-slim", "sklearn", ("serve", "sklearn")).base_tag()
    assert one.base_tag() != ImageInputs("python:3.12-slim", "sklearn", ("serve", "sklearn")).base_tag()
    assert one.base_tag() != ImageInputs("python:3.11-slim", "sklearn", ("serve", "sklearn", "docker")).base_tag()


def test_the_training_runs_framework_versions_are_pinned_and_name_the_base() -> None:
    packages = {"lepton-ci": "0.1.0", "numpy": "2.1.0", "scikit-learn": "1.6.1", "torch": "2.13.0", "scipy": 1}
    assert pins_from_run("sklearn", packages) == ("numpy==2.1.0", "scikit-learn==1.6.1")  # not a string: skipped
    assert pins_from_run("torch", packages) == ("numpy==2.1.0", "torch==2.13.0")
    assert pins_from_run("onnx", packages) == ()
    plain = ImageInputs("python:3.11-slim", "sklearn", ("serve", "sklearn"))
    pinned = ImageInputs("python:3.11-slim", "sklearn", ("serve", "sklearn"), pins=("scikit-learn==1.6.1",))
    other = ImageInputs("python:3.11-slim", "sklearn", ("serve", "sklearn"), pins=("scikit-learn==1.5.0",))
    assert len({plain.base_tag(), pinned.base_tag(), other.base_tag()}) == 3


@pytest.mark.parametrize(
    ("pins", "label", "mismatch"),
    [
        (("scikit-learn==1.6.1",), "numpy==2.1.0 scikit-learn==1.6.1", None),
        (("scikit-learn==1.6.1",), "", None),  # a base that names no pins
        (
            ("numpy==2.1.0", "scikit-learn==1.6.1"),
            "scikit-learn==1.5.0",
            ("scikit-learn==1.6.1", "scikit-learn==1.5.0"),
        ),
        ((), "scikit-learn==1.5.0", None),  # pinning turned off
    ],
)
def test_a_base_with_other_versions_of_the_training_libraries_is_found(
    pins: tuple[str, ...], label: str, mismatch: tuple[str, str] | None
) -> None:
    from lepton_ci.steps.build import _pin_mismatch

    assert _pin_mismatch(pins, label) == mismatch


@pytest.mark.parametrize(
    ("cmdline", "address"),
    [
        (serve_command("m.joblib", "sklearn", "wine", 3), ("127.0.0.1", 8080)),
        (["python", "-m", "lepton_ci.serve", "--host", "127.0.0.1", "--port", "41234"], ("127.0.0.1", 41234)),
        (["python", "-m", "lepton_ci.serve", "--host=10.0.0.5", "--port=9000"], ("10.0.0.5", 9000)),
        ([], ("127.0.0.1", 8080)),
    ],
)
def test_the_health_check_probes_the_port_the_server_was_started_with(cmdline: list[str], address: tuple) -> None:
    assert server_address(cmdline) == address


def test_the_rebuilt_config_appends_the_layer_and_serves_the_new_model(tmp_path: Path) -> None:
    layer = model_layer(_files(tmp_path), tmp_path / "l.tgz", "/opt/lepton/model", 10001)
    config = {
        "config": {"Labels": {"ai.lepton.framework": "sklearn"}, "Cmd": ["python", "-m", "lepton_ci.serve", "--help"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
        "history": [{"created_by": "base"}],
    }
    base = BaseImage(parse_image("localhost/a:b", "x"), None, {}, "", "", config)  # type: ignore[arg-type]
    cmd = serve_command("model.joblib", "sklearn", "wine", 2)
    out = new_config(base, layer, {"ai.lepton.model.version": "2"}, cmd, "2026-01-01T00:00:00Z")
    assert out["rootfs"]["diff_ids"] == ["sha256:" + "0" * 64, layer.diff_id]
    assert out["config"]["Cmd"] == cmd
    assert out["config"]["Labels"] == {"ai.lepton.framework": "sklearn", "ai.lepton.model.version": "2"}
    assert [h.get("empty_layer", False) for h in out["history"]] == [False, False, True]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "0" * 64]  # the base's config is not changed


def test_the_image_record_round_trips(tmp_path: Path) -> None:
    digest = "sha256:" + "1" * 64
    rec = ImageRecord(image=f"ghcr.io/a/b@{digest}", digest=digest, tags=["v1"], mode="model-only", pushed=True)
    rec.extra["future"] = 1
    again = ImageRecord.read(rec.write(tmp_path / "image.json"))
    assert again == rec and again.extra == {"future": 1}
    assert json.loads((tmp_path / "image.json").read_text())["kind"] == "image"
    with pytest.raises(UserError, match="'pushed' must be"):
        ImageRecord.from_dict({**rec.to_dict(), "pushed": "yes"})


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--image", "127.0.0.1:5000/team/serve:v1"], {}, "--image"),
        ([], {"LEPTON_CI_BUILD_IMAGE": "127.0.0.1:5000/team/serve@sha256:" + "a" * 64}, "LEPTON_CI_BUILD_IMAGE"),
        (["--image", "127.0.0.1:5000/team/serve:x"], {"LEPTON_CI_BUILD_IMAGE": "127.0.0.1:5000/ok"}, "--image"),
    ],
)
def test_the_image_repository_comes_from_the_flag_then_the_environment_then_the_config(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    from tests.e2e.helpers import assert_one_line_error, cli

    (tmp_path / "lepton.yml").write_text(
        "version: 1\nmodel: {name: m, framework: sklearn, file: m.joblib}\ntrain: {command: 'true'}\n"
        "build: {image: 127.0.0.1:5000/from-config}\n"
    )
    r = cli("build", *args, cwd=tmp_path, env={"LEPTON_CI_BUILD_IMAGE": "", **env})
    assert_one_line_error(r, 2, named, "names a tag or digest")


def test_the_default_base_runs_this_python_and_another_python_is_refused_before_building() -> None:
    import sys

    from lepton_ci.steps.build import DEFAULT_BASE_IMAGE, check_base_python

    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"python:{here}-slim" == DEFAULT_BASE_IMAGE
    other = "3.10" if here != "3.10" else "3.13"
    for ok in (DEFAULT_BASE_IMAGE, f"docker.io/library/python:{here}.2-bookworm", "debian:bookworm", "python:latest"):
        check_base_python(ok)
    for bad in (f"python:{other}-slim", f"registry.example:5000/mirror/python:{other}"):
        with pytest.raises(UserError) as err:
            check_base_python(bad)
        assert str(err.value).startswith(f"build.base_image {bad!r} runs Python {other}, but lepton-ci runs on")
        assert f"use python:{here}-slim" in str(err.value)


def test_the_report_shows_the_image_of_the_reported_version_only() -> None:
    from lepton_ci.records import GateRecord, ModelVersion
    from lepton_ci.steps.report import build_context, image_context, render
    from tests.unit.test_record_validation import gate_dict

    mv = ModelVersion(name="wine", version=3, digest="sha256:" + "b" * 64)
    record = ImageRecord(
        image="ghcr.io/acme/wine-serve@sha256:" + "c" * 64,
        digest="sha256:" + "c" * 64,
        tags=["v3", "sha-0123456789ab"],
        mode="model-only",
        model={"name": "wine", "version": 3, "digest": mv.digest},
        size_bytes=312_400_000,
        pushed_bytes=2_100_000,
        pushed=True,
    )
    shown = image_context(record, mv)
    assert shown == {
        "ref": record.image,
        "how": "model-only rebuild",
        "sizes": "312.4 MB, 2.1 MB pushed",
        "tags": ["v3", "sha-0123456789ab"],
    }
    other = ModelVersion(name="wine", version=4, digest="sha256:" + "d" * 64)
    assert image_context(record, other) is None  # a stale image.json of another version is not shown
    assert image_context(None, mv) is None and image_context(record, None) is None

    base = build_context(None, GateRecord.from_dict(gate_dict()), mv, None, "wine", 4, ["candidate"])
    base.update(charts=[], slo=None)
    line = f"**Image:** `{record.image}` · model-only rebuild · 312.4 MB, 2.1 MB pushed · tags: v3, sha-0123456789ab"
    assert line in render({**base, "image": shown})
    assert "**Image:**" not in render({**base, "image": None})
