"""Attacks on "only a gated model reaches production, byte for byte", each tried for real.

A project is trained, gated (signed with the test key) and tagged into a real file:// registry; then one
thing is changed — a manifest field, a gate-record field, a blob, the deploy cache, the registry itself —
and `deploy` must either refuse (a LeptonError, so exit 1 or 2) or serve exactly the bytes the gate
blessed. The deploy target here is a probe that records the bytes it was handed and loads nothing, so a
bypass shows as different bytes instead of running a payload; tests/integration/test_deploy_local.py
drives the real model server with a real pickle payload.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from lepton_ci.config import load_config
from lepton_ci.deploy import base as deploy_base
from lepton_ci.errors import LeptonError, NotFound, RegistryError
from lepton_ci.records import Deployment, artifacts_digest
from lepton_ci.steps import deploy as deploy_step
from lepton_ci.steps.gate import gate
from lepton_ci.steps.tag import tag
from lepton_ci.steps.train import train
from tests.e2e.helpers import make_project
from tests.support.keys import OTHER_PRIVATE_PEM, PRIVATE_PEM, PUBLIC_PEM

SERVED: list[bytes] = []


class ProbeTarget:
    """Records the bytes of the model file it is given; never unpickles anything."""

    name = "probe"

    def deploy(self, spec: deploy_base.DeploySpec, current: Deployment | None) -> Deployment:
        assert spec.model_dir is not None
        SERVED.append((spec.model_dir / spec.model_file).read_bytes())
        assert spec.private_copy and spec.model_dir.name.startswith(deploy_base.COPY_PREFIX)
        assert spec.model_dir.stat().st_mode & 0o077 == 0, "the served copy is private to this user"
        shutil.rmtree(spec.model_dir)  # a real target deletes its copy when the server stops
        return Deployment(target=self.name, model=spec.version.name, version=spec.version.version,
                          digest=spec.version.digest, endpoint="probe://", status="healthy", state={})

    def status(self, deployment: Deployment) -> Deployment:
        return deployment

    def stop(self, deployment: Deployment) -> Deployment:
        return deployment


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(deploy_base.TARGETS, "probe", f"{__name__}:ProbeTarget")
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY", PRIVATE_PEM)
    monkeypatch.delenv("LEPTON_CI_PUBLIC_KEY", raising=False)
    monkeypatch.delenv("LEPTON_CI_REGISTRY", raising=False)
    root = make_project(tmp_path / "p")
    (root / "signing.pub").write_text(PUBLIC_PEM)
    with open(root / "lepton.yml", "a") as f:
        f.write("signing:\n  public_key: signing.pub\n")
    SERVED.clear()
    return root


def _config(root: Path) -> Any:
    config = load_config(root / "lepton.yml")
    config.data.setdefault("deploy", {})["target"] = "probe"
    return config


def _release(root: Path, acc: float) -> bytes:
    """train, gate, tag; returns the model bytes the gate blessed."""
    config = _config(root)
    train(config, param_overrides={"acc": acc}, quiet=True)
    blessed = (root / "model.bin").read_bytes()
    gate(config, baseline="none")
    tag(config)
    return blessed


def _deploy(root: Path, ref: str = "1", **kw: Any) -> bytes:
    deploy_step.deploy(_config(root), ref=ref, move_alias=False, **kw)
    return SERVED[-1]


def _manifest(root: Path, n: int = 1) -> Path:
    return root / ".lepton" / "registry" / "models" / "toy" / "versions" / f"{n}.json"


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    p = root / ".lepton" / "registry" / "blobs" / "sha256" / digest
    p.write_bytes(data)
    return {"sha256": digest, "size": len(data)}


def _rewrite(path: Path, change: Callable[[dict[str, Any]], None], *, reseal: bool = True) -> None:
    """Edit a manifest; with `reseal`, recompute its digests so only the signature can catch it."""
    from lepton_ci.records import ModelVersion

    data = json.loads(path.read_text())
    change(data)
    if reseal:
        data["artifacts_digest"] = artifacts_digest(data["artifacts"])
        mv = ModelVersion.from_dict(data)
        data["digest"] = mv.compute_digest()
    path.write_text(json.dumps(data))


def _refused_or_blessed(root: Path, blessed: bytes, ref: str = "1") -> str:
    before = len(SERVED)
    try:
        served = _deploy(root, ref)
    except LeptonError as exc:
        assert exc.exit_code in (1, 2) and "\n" not in str(exc)
        assert len(SERVED) == before, "the target was called before the refusal"
        return "refused"
    assert served == blessed, "deploy served bytes the gate never blessed"
    return "served the blessed bytes"


# --- the reproductions from the review ----------------------------------------------------------------


def test_the_blessed_version_deploys_and_serves_its_own_bytes(project: Path) -> None:
    blessed = _release(project, 0.9)
    assert _deploy(project) == blessed


def test_artifact_entry_replaced_by_another_pickle(project: Path) -> None:
    blessed = _release(project, 0.9)
    evil = _blob(project, b"cos\nsystem\n(S'echo pwned'\ntR.")
    _rewrite(_manifest(project), lambda d: d["artifacts"][0].update(evil))
    assert _refused_or_blessed(project, blessed) == "refused"


def test_artifact_entry_redirected_to_another_versions_blob(project: Path) -> None:
    blessed = _release(project, 0.9)
    _release(project, 0.95)
    other = json.loads(_manifest(project, 2).read_text())["artifacts"][0]
    _rewrite(_manifest(project), lambda d: d["artifacts"][0].update(sha256=other["sha256"], size=other["size"]))
    assert _refused_or_blessed(project, blessed) == "refused"


@pytest.mark.parametrize("model_file", ["/etc/passwd", "../../../../etc/passwd", "model.bin/../../x", "other.bin"])
def test_model_file_outside_the_version(project: Path, model_file: str) -> None:
    blessed = _release(project, 0.9)
    _rewrite(_manifest(project), lambda d: d["metadata"].__setitem__("model_file", model_file))
    assert _refused_or_blessed(project, blessed) == "refused"


@pytest.mark.parametrize("key, value", [("model_file", "extra.bin"), ("framework", "torch")])
def test_metadata_cannot_choose_another_blessed_file_or_loader(project: Path, key: str, value: str) -> None:
    """Both files are blessed, but the gate blessed model.bin as the model with its loader: a registry
    writer who re-seals the manifest must not make the server load extra.bin, or load with another loader."""
    config = (project / "lepton.yml").read_text()
    config = config.replace("artifacts: [model.bin]", "artifacts: [model.bin, extra.bin]")
    (project / "lepton.yml").write_text(config.replace("  name: toy\n", "  name: toy\n  file: model.bin\n", 1))
    (project / "train.py").write_text((project / "train.py").read_text() + "open('extra.bin', 'wb').write(b'x')\n")
    blessed = _release(project, 0.9)
    _rewrite(_manifest(project), lambda d: d["metadata"].__setitem__(key, value))
    with pytest.raises(LeptonError, match=f"names {key}"):
        _deploy(project)
    assert SERVED == []
    path = _manifest(project)
    _rewrite(path, lambda d: d["metadata"].pop(key))  # without it, the signed value is used
    assert _deploy(project) == blessed


def test_gate_record_pasted_from_another_version(project: Path) -> None:
    _release(project, 0.9)
    _release(project, 0.95)
    v1_gate = json.loads(_manifest(project, 1).read_text())["metadata"]["gate"]

    def paste(d: dict[str, Any]) -> None:
        d["metadata"]["gate"] = v1_gate

    _rewrite(_manifest(project, 2), paste)
    data = json.loads(_manifest(project, 2).read_text())
    data["artifacts_digest"] = v1_gate["candidate"]["digest"]  # edited to match the pasted gate record
    from lepton_ci.records import ModelVersion

    data["digest"] = ModelVersion.from_dict(data).compute_digest()
    _manifest(project, 2).write_text(json.dumps(data))
    with pytest.raises(LeptonError):
        _deploy(project, "2")
    assert SERVED == []


def test_a_swapped_deploy_cache_is_discarded(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blessed = _release(project, 0.9)
    assert _deploy(project) == blessed
    cached = next((project / ".lepton" / "deploy" / "models" / "toy").glob("v1-*")) / "model.bin"
    cached.write_bytes(b"swapped after the first deploy")
    assert _deploy(project) == blessed
    assert "discarding the deploy cache" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["changed bytes", "extra file", "symlink", "whole dir symlink"])
def test_a_pre_seeded_deploy_cache_is_never_trusted(project: Path, seed: str, tmp_path: Path) -> None:
    blessed = _release(project, 0.9)
    mv = json.loads(_manifest(project).read_text())
    dest = project / ".lepton" / "deploy" / "models" / "toy" / f"v1-{mv['digest'].split(':')[1][:16]}"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.bin").write_bytes(b"attacker bytes")
    dest.parent.mkdir(parents=True)
    if seed == "whole dir symlink":
        dest.symlink_to(evil, target_is_directory=True)
    else:
        dest.mkdir()
        if seed == "changed bytes":
            (dest / "model.bin").write_bytes(b"attacker bytes")
        elif seed == "extra file":
            (dest / "model.bin").write_bytes(blessed)
            (dest / "payload.pkl").write_bytes(b"attacker bytes")
        else:
            (dest / "model.bin").symlink_to(evil / "model.bin")
    assert _deploy(project) == blessed


def test_a_corrupted_blob_is_refused(project: Path) -> None:
    blessed = _release(project, 0.9)
    digest = json.loads(_manifest(project).read_text())["artifacts"][0]["sha256"]
    (project / ".lepton" / "registry" / "blobs" / "sha256" / digest).write_bytes(b"bit rot or an attacker")
    assert _refused_or_blessed(project, blessed) == "refused"


def test_a_version_signed_with_another_key_is_refused(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY", OTHER_PRIVATE_PEM)
    _release(project, 0.9)
    monkeypatch.delenv("LEPTON_CI_SIGNING_KEY")  # deploy holds only the public key from lepton.yml
    with pytest.raises(LeptonError, match="not a trusted key"):
        _deploy(project)


def test_deploy_needs_no_private_key(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blessed = _release(project, 0.9)
    monkeypatch.delenv("LEPTON_CI_SIGNING_KEY")
    assert _deploy(project) == blessed


def test_allow_unblessed_still_checks_the_bytes(project: Path) -> None:
    _release(project, 0.9)
    evil = _blob(project, b"evil")
    _rewrite(_manifest(project), lambda d: d["artifacts"][0].update(evil))
    with pytest.raises(LeptonError):
        deploy_step.deploy(_config(project), ref="1", move_alias=False, allow_unblessed=True)
    assert SERVED == []


# --- every field, one at a time -----------------------------------------------------------------------


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, path + (k,))] or [path]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _leaves(v, path + (i,))] or [path]
    return [path]


def _mutated(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1") if value else "x"
    if isinstance(value, dict):
        return {"injected": 1}
    if isinstance(value, list):
        return [{"injected": 1}]
    return "x"


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def test_every_manifest_and_gate_field_changed_one_at_a_time(project: Path) -> None:
    """Sealed (digests recomputed, as an attacker with write access would) and unsealed alike: deploy
    refuses, or serves the blessed bytes when the field is not part of what was blessed."""
    blessed = _release(project, 0.9)
    path = _manifest(project)
    original = path.read_text()
    data = json.loads(original)
    fields = [p for p in _leaves(data) if p and p[0] != "metadata" or (len(p) > 1 and p[1] in ("gate", "model_file"))]
    bundle = ("metadata", "gate", "signature", "model_signature", "bundle")
    fields = [p for p in fields if p[:5] != bundle] + [bundle + ("dsseEnvelope", "payload"),
                                                        bundle + ("dsseEnvelope", "signatures")]
    assert len(fields) > 40
    outcomes: dict[str, int] = {}
    shutil.rmtree(project / ".lepton" / "deploy", ignore_errors=True)
    for field in fields:
        for reseal in (True, False):
            path.write_text(original)
            try:
                _rewrite(path, lambda d, f=field: _set(d, f, _mutated(_get(d, f))), reseal=reseal)
            except LeptonError:
                continue  # the change makes the manifest unreadable: refused already
            outcome = _refused_or_blessed(project, blessed)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome != "refused":  # only fields outside the blessing may change without a refusal
                assert field[:2] != ("metadata", "gate") or field[2] in ("schema_version",), field
    path.write_text(original)
    assert outcomes.get("refused", 0) > len(fields)


# --- fail closed --------------------------------------------------------------------------------------


def test_first_run_is_a_positive_fact(project: Path) -> None:
    config = _config(project)
    train(config, quiet=True)
    record = gate(config)
    assert record.baseline["metrics"] is None and "no baseline" in record.baseline["note"]


@pytest.mark.parametrize("breakage", ["registry is a file", "not a registry", "damaged marker",
                                      "damaged manifest", "damaged history"])
def test_the_gate_fails_closed_when_the_registry_cannot_be_read(project: Path, breakage: str) -> None:
    _release(project, 0.9)
    deploy_step.deploy(_config(project), ref="1")  # production -> v1
    reg = project / ".lepton" / "registry"
    if breakage == "registry is a file":
        shutil.rmtree(reg)
        reg.write_text("x")
    elif breakage == "not a registry":
        (reg / "lepton-registry.json").unlink()
    elif breakage == "damaged marker":
        (reg / "lepton-registry.json").write_text("{not json")
    elif breakage == "damaged manifest":
        _manifest(project).write_text("garbage")
    else:
        (reg / "models" / "toy" / "history.jsonl").write_text("garbage\n")
    config = _config(project)
    train(config, param_overrides={"acc": 0.1}, quiet=True)  # would fail max_drop against production
    with pytest.raises(RegistryError) as info:
        gate(config)
    assert not isinstance(info.value, NotFound)


def test_the_registry_vanishing_between_calls_is_never_a_first_run(project: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _release(project, 0.9)
    deploy_step.deploy(_config(project), ref="1")
    from lepton_ci import registry as registry_pkg
    from lepton_ci.steps import gate as gate_step

    real_open = registry_pkg.open_registry

    def open_then_vanish(*args: Any, **kwargs: Any) -> Any:
        reg = real_open(*args, **kwargs)
        shutil.rmtree(project / ".lepton" / "registry")
        return reg

    monkeypatch.setattr(gate_step, "open_registry", open_then_vanish)
    config = _config(project)
    train(config, param_overrides={"acc": 0.1}, quiet=True)
    with pytest.raises(RegistryError) as info:
        gate(config)
    assert not isinstance(info.value, NotFound)
    assert not (project / ".lepton" / "gate.json").exists() or \
        json.loads((project / ".lepton" / "gate.json").read_text())["candidate"]["metrics"]["eval.accuracy"] != 0.1


@pytest.mark.parametrize("call", ["get", "fetch", "aliases", "move_alias"])
def test_deploy_fails_closed_when_a_registry_call_fails(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                        call: str) -> None:
    _release(project, 0.9)
    from lepton_ci.registry.local import LocalRegistry

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(LocalRegistry, call, broken)
    with pytest.raises((LeptonError, OSError)):
        deploy_step.deploy(_config(project), ref="1")
    dep = project / ".lepton" / "deployment.json"
    if call in ("get", "fetch"):
        assert SERVED == [] and not dep.exists()
