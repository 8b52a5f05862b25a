"""The registry through lepton_ci.registry.open_registry, as one suite over every backend.

The first part runs against every backend in BACKEND_NAMES (the `registry` fixture); a backend adds its
name there and a `Tamper` that edits its storage the way an attacker or a crash would. File-specific
behaviour (the marker, flock, temporary files, OS errors) is in the last part.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lepton_ci.cli import main
from lepton_ci.errors import NotFound, RegistryError, TransientError, UserError
from lepton_ci.fsutil import sha256_bytes
from lepton_ci.records import ModelVersion, artifacts_digest
from lepton_ci.registry import BACKENDS, Storage, open_registry
from lepton_ci.registry.local import MARKER, LocalRegistry, LocalStorage
from lepton_ci.registry.oci import VERSION_LAYER, OciRegistry, OciStorage
from lepton_ci.registry.shared import ModelRegistry, event_digest, parse_history
from tests.support.oci_registry import RegistryServer

NAME = "digits"
BACKEND_NAMES = ["file", "oci"]


def artifact(tmp_path: Path, content: bytes, rel: str = "model.bin") -> tuple[str, Path]:
    src = tmp_path / "src" / sha256_bytes(content)[:12] / rel
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(content)
    return rel, src


class FileTamper:
    """Edits a file:// registry behind its back."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def manifest(self, name: str, number: int) -> dict[str, Any]:
        return json.loads((self.root / "models" / name / "versions" / f"{number}.json").read_text())

    def replace_manifest(self, name: str, number: int, data: dict[str, Any]) -> None:
        (self.root / "models" / name / "versions" / f"{number}.json").write_text(json.dumps(data, indent=2))

    def delete_manifest(self, name: str, number: int) -> None:
        (self.root / "models" / name / "versions" / f"{number}.json").unlink()

    def replace_blob(self, digest_hex: str, data: bytes) -> None:
        (self.root / "blobs" / "sha256" / digest_hex).write_bytes(data)

    def delete_blob(self, digest_hex: str) -> None:
        (self.root / "blobs" / "sha256" / digest_hex).unlink()

    def add_orphan_blob(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        return digest


class OciTamper:
    """Edits an oci:// registry as an attacker with push rights (or write access to its storage) would: a
    rewritten version is re-tagged with its new digest, so only lepton-ci's own checks can tell."""

    def __init__(self, registry: ModelRegistry, server: RegistryServer) -> None:
        self.storage: OciStorage = registry.storage  # type: ignore[assignment]
        self.client = self.storage.client
        self.server = server

    def _tag(self, name: str, number: int) -> str:
        tag = self.storage._version_tag(name, number)
        assert tag, f"no tag for v{number}"
        return tag

    def manifest(self, name: str, number: int) -> dict[str, Any]:
        repo, tag = self.storage._repo(name), self._tag(name, number)
        oci = self.storage._manifest(name, tag)
        layer = self.storage._layer(name, tag, oci, VERSION_LAYER)
        return json.loads(self.client.read_blob(repo, layer["digest"], 1 << 24))

    def replace_manifest(self, name: str, number: int, data: dict[str, Any]) -> None:
        repo, tag = self.storage._repo(name), self._tag(name, number)
        raw = json.dumps(data, indent=2).encode()
        oci = self.storage._manifest(name, tag)
        for layer in oci["layers"]:
            if layer["mediaType"] == VERSION_LAYER:
                layer["digest"], layer["size"] = self.client.push_bytes(repo, raw), len(raw)
        digest = data.get("digest")
        new_tag = f"v{number}-{digest.removeprefix('sha256:')[:12]}" if isinstance(digest, str) else tag
        old_digest = self.client.manifest_digest(repo, tag)
        new_digest = self.client.put_manifest(repo, new_tag, json.dumps(oci).encode())
        if new_tag != tag and old_digest != new_digest:
            self.client.delete_manifest(repo, old_digest)  # drops the old version tag (and alias mirrors)

    def delete_manifest(self, name: str, number: int) -> None:
        repo = self.storage._repo(name)
        self.client.delete_manifest(repo, self.client.manifest_digest(repo, self._tag(name, number)))

    def replace_blob(self, digest_hex: str, data: bytes) -> None:
        self.server.blob_path(digest_hex).write_bytes(data)

    def delete_blob(self, digest_hex: str) -> None:
        self.server.blob_path(digest_hex).unlink()

    def add_orphan_blob(self, data: bytes) -> str:
        raise NotImplementedError("an OCI registry cannot list blobs; the tests that use this are file:// only")


@dataclass
class Backend:
    name: str
    url: str
    registry: ModelRegistry
    tamper: FileTamper | OciTamper


@pytest.fixture()
def oci_server(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry of its own per test (it starts in well under a second): blobs are shared by every
    repository of a server, so a test that corrupts one must not corrupt the next test's."""
    with RegistryServer(tmp_path / "oci-registry") as server:
        yield server


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        root = tmp_path / "registry"
        url = f"file://{root}"
        return Backend("file", url, open_registry(url, tmp_path, create=True), FileTamper(root))
    if request.param == "oci":
        server = request.getfixturevalue("oci_server")
        url = server.url("team/models")
        reg = open_registry(url, tmp_path, create=True)
        return Backend("oci", url, reg, OciTamper(reg, server))
    raise AssertionError(request.param)


# For tests of what only file:// has (listing blobs, temporary files, gc of blobs): an OCI registry has no blob
# listing and collects its own garbage, so those tests run on file:// alone.
FILE_ONLY = pytest.mark.parametrize("backend", ["file"], indirect=True)


@pytest.fixture()
def registry(backend: Backend) -> ModelRegistry:
    return backend.registry


@pytest.fixture()
def tamper(backend: Backend) -> FileTamper:
    return backend.tamper


def push_n(reg, tmp_path: Path, n: int, aliases=("production",)) -> list:
    return [reg.push(NAME, [artifact(tmp_path, f"weights {i}".encode())], {"run": {"run_id": f"r{i}"}},
                     aliases=list(aliases)).version for i in range(1, n + 1)]


def errors(problems):
    return [p for p in problems if p.severity == "error"]


def warnings(problems):
    return [p for p in problems if p.severity == "warning"]


def history_lines(reg) -> list[dict]:
    return parse_history(reg.storage.read_history(NAME), "history")


def write_history(reg, events: list[dict]) -> None:
    reg.storage.write_history(NAME, "".join(json.dumps(e) + "\n" for e in events).encode())


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- the seam: backend table, protocol, cheap listing ------------------------------------------------


def test_backends_are_a_table_loaded_through_plugins(backend):
    assert BACKENDS["file"] == "lepton_ci.registry.local:LocalRegistry"
    assert isinstance(backend.registry.storage, Storage)  # the storage implements the protocol
    if backend.name == "file":
        assert isinstance(backend.registry, LocalRegistry) and LocalRegistry.storage_class is LocalStorage
        assert isinstance(backend.registry.storage, LocalStorage)
    else:
        assert isinstance(backend.registry, OciRegistry) and isinstance(backend.registry.storage, OciStorage)
    assert backend.registry.url == backend.url


def test_the_layers_import_without_a_cycle():
    # base knows no backend; each module imports alone in a fresh interpreter.
    for module in ("lepton_ci.registry.base", "lepton_ci.registry.shared", "lepton_ci.registry.local",
                   "lepton_ci.registry.backends"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    import lepton_ci.registry.base as base

    assert not hasattr(base, "open_registry")




def test_version_numbers_and_get_by_number_read_one_manifest(registry, tmp_path, monkeypatch):
    push_n(registry, tmp_path, 4, aliases=())
    assert registry.version_numbers(NAME) == [1, 2, 3, 4]
    assert registry.version_numbers("other") == []
    reads: list[int] = []
    real = registry.storage.read_manifest
    monkeypatch.setattr(registry.storage, "read_manifest", lambda name, n: reads.append(n) or real(name, n))
    assert registry.get(NAME, 3).version == 3
    assert registry.get(NAME, "v2").version == 2
    assert registry.get(NAME, "latest").version == 4
    assert reads == [3, 2, 4]


# --- not found versus broken -----------------------------------------------------------------------------


def test_not_found_is_only_the_positive_answer(registry, tmp_path):
    with pytest.raises(NotFound, match="has no versions"):
        registry.get(NAME, "production")  # first run: the gate reads this as "no baseline"
    push_n(registry, tmp_path, 2)
    for ref in (9, "v9", "staging", "sha256:" + "0" * 64, "sha256:00000"):
        with pytest.raises(NotFound):
            registry.get(NAME, ref)
    with pytest.raises(NotFound, match="no alias 'staging'"):
        registry.rollback(NAME, "staging")
    with pytest.raises(NotFound, match="no version 7"):
        registry.move_alias(NAME, "staging", 7)


def test_an_alias_history_without_versions_is_damage_not_a_first_run(registry, tamper, tmp_path):
    push_n(registry, tmp_path, 2)
    tamper.delete_manifest(NAME, 1)
    tamper.delete_manifest(NAME, 2)
    with pytest.raises(RegistryError, match="alias history but no versions") as info:
        registry.get(NAME, "production")
    assert not isinstance(info.value, NotFound)


@pytest.mark.parametrize("ref", ["sha256:", "sha256:abc", "sha256:XYZW", "production\n", "v1\n", "1 ", "prod uction",
                                 "../x", "", "Production"])
def test_a_malformed_reference_is_an_error_not_a_not_found(registry, tmp_path, ref):
    with pytest.raises(RegistryError) as info:
        registry.get(NAME, ref)  # even before the model has versions: never "first run"
    assert not isinstance(info.value, NotFound)
    push_n(registry, tmp_path, 1)
    with pytest.raises(RegistryError) as info:
        registry.get(NAME, ref)
    assert not isinstance(info.value, NotFound)


def test_an_ambiguous_digest_prefix_is_refused_not_guessed(registry, tmp_path, monkeypatch):
    v1, v2 = push_n(registry, tmp_path, 2, aliases=())
    fakes = [ModelVersion(name=NAME, version=1, digest="sha256:abcd" + "1" * 60),
             ModelVersion(name=NAME, version=2, digest="sha256:abcd" + "2" * 60)]
    monkeypatch.setattr(registry, "versions", lambda name: fakes)
    with pytest.raises(RegistryError, match="ambiguous") as info:
        registry.get(NAME, "sha256:abcd")
    assert not isinstance(info.value, NotFound)
    assert registry.get(NAME, "sha256:abcd1").version == 1


# --- names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits\n", "digits\r", "dig\x00its", "dig\tits", "Digits", "../digits", "", ".digits"])
def test_invalid_model_names_are_refused(registry, tmp_path, name):
    with pytest.raises(UserError, match="not valid"):
        registry.push(name, [artifact(tmp_path, b"w")], {})
    with pytest.raises(UserError, match="not valid"):
        registry.get(name, "latest")
    assert registry.models() == []


@pytest.mark.parametrize("alias", ["production\n", "prod\x1b", "prod\tx", "latest", "Production", "1st", "a" * 64])
def test_invalid_aliases_are_refused(registry, tmp_path, alias):
    with pytest.raises(UserError, match="not valid"):
        registry.push(NAME, [artifact(tmp_path, b"w")], {}, aliases=[alias])
    assert registry.version_numbers(NAME) == []
    push_n(registry, tmp_path, 1, aliases=())
    with pytest.raises(UserError, match="not valid"):
        registry.move_alias(NAME, alias, 1)
    assert registry.history(NAME) == []


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", "a\\..\\x", "C:/x", "./a", "a//b", "a\nb"])
def test_push_refuses_artifact_paths_that_escape(registry, tmp_path, rel):
    with pytest.raises(UserError, match="artifact path"):
        registry.push(NAME, [(rel, artifact(tmp_path, b"w")[1])], {})
    assert registry.version_numbers(NAME) == []


def test_push_refuses_a_model_file_that_is_not_an_artifact(registry, tmp_path):
    with pytest.raises(UserError, match="not one of the artifacts"):
        registry.push(NAME, [artifact(tmp_path, b"w")], {"model_file": "../../x"})
    assert registry.push(NAME, [artifact(tmp_path, b"w")], {"model_file": "model.bin"}).created


# --- verified reads: a tampered version is refused and reported -----------------------------------------------


def _set(data: dict, path: str, value: Any) -> None:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        data = data[k]
    data[keys[-1]] = value


def _redigest(data: dict) -> dict:
    """What a forger with write access does: recompute both digests so they match the edit."""
    data["artifacts_digest"] = artifacts_digest(data["artifacts"])
    mv = ModelVersion(**{k: data[k] for k in ("name", "version", "artifacts", "artifacts_digest", "metadata", "created")})
    data["digest"] = mv.compute_digest()
    return data


TAMPERS = [
    ("name", "other", False),
    ("version", 2, False),
    ("version", 2, True),
    ("digest", "sha256:" + "0" * 64, False),
    ("artifacts.0.path", "renamed.bin", False),
    ("artifacts.0.sha256", "1" * 64, False),
    ("artifacts.0.size", 1, False),
    ("artifacts_digest", "sha256:" + "0" * 64, False),
    ("metadata.model_file", "/etc/passwd", False),
    ("metadata.model_file", "/etc/passwd", True),
    ("metadata.model_file", "../../x", True),
    ("metadata.model_file", "other.bin", True),
    ("metadata.gate.verdict", "pass", False),
    ("metadata.gate.candidate.metrics.acc", 0.99, False),
    ("artifacts.0.path", "../../x", True),
    ("artifacts.0.path", "/abs/model.bin", True),
    ("artifacts.0.path", "..\\evil", True),
    ("artifacts.0.sha256", "not hex", True),
    ("artifacts.0.size", -1, True),
    ("metadata.gate.candidate.digest", "sha256:" + "0" * 64, True),
]


@pytest.mark.parametrize("field,value,redigest", TAMPERS, ids=[f"{f}={v!r}{'+redigest' if r else ''}" for f, v, r in TAMPERS])
def test_a_tampered_manifest_is_refused_by_get_and_fetch_and_reported_by_check(registry, tamper, tmp_path, field, value, redigest):
    gate = {"verdict": "fail", "candidate": {"metrics": {"acc": 0.5}}}
    registry.push(NAME, [artifact(tmp_path, b"weights")], {"run": {"run_id": "r1"}, "gate": gate, "model_file": "model.bin"},
                  aliases=["production"])
    assert registry.check() == []
    data = tamper.manifest(NAME, 1)
    _set(data, field, value)
    if redigest:
        if field == "metadata.gate.candidate.digest":
            pass  # the gate judged other artifacts
        try:
            _redigest(data)
        except (KeyError, TypeError):
            pass
    tamper.replace_manifest(NAME, 1, data)
    for ref in (1, "production", "latest"):
        with pytest.raises(RegistryError, match="refused|damaged") as info:
            registry.get(NAME, ref)
        assert not isinstance(info.value, NotFound)
    with pytest.raises(RegistryError):
        registry.versions(NAME)
    dest = tmp_path / "out"
    with pytest.raises(RegistryError):
        registry.fetch(NAME, 1, dest)
    assert not dest.exists() or not any(dest.rglob("*"))
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
    problems = errors(registry.check())
    assert problems and problems[0].where == f"{NAME} v1", problems


def test_an_artifact_redirected_to_another_blob_is_caught(registry, tamper, tmp_path):
    good = registry.push(NAME, [artifact(tmp_path, b"the gated weights")], {"run": {"run_id": "r1"}}).version
    other = registry.push(NAME, [artifact(tmp_path, b"other weights, longer than those")], {"run": {"run_id": "r2"}}).version
    data = tamper.manifest(NAME, 1)
    data["artifacts"][0]["sha256"] = other.artifacts[0]["sha256"]  # the blob exists; only the size disagrees
    tamper.replace_manifest(NAME, 1, _redigest(data))
    assert registry.get(NAME, 1).digest != good.digest  # self-consistent: only the bytes can tell
    problems = errors(registry.check())
    assert [p.where for p in problems] == [f"{NAME} v1"] and "another size" in problems[0].message
    with pytest.raises(RegistryError, match="another size"):
        registry.fetch(NAME, 1, tmp_path / "out")
    assert not (tmp_path / "out" / "model.bin").exists()


def test_a_redirect_that_keeps_the_size_is_caught_by_the_run_record(registry, tamper, tmp_path):
    a, b = artifact(tmp_path, b"weights A"), artifact(tmp_path, b"weights B")
    run = {"run_id": "r1", "artifacts_digest": artifacts_digest([{"path": "model.bin", "sha256": sha256_bytes(b"weights A")}])}
    registry.push(NAME, [a], {"run": run})
    registry.push(NAME, [b], {"run": {"run_id": "r2"}})
    data = tamper.manifest(NAME, 1)
    data["artifacts"][0]["sha256"] = sha256_bytes(b"weights B")
    tamper.replace_manifest(NAME, 1, _redigest(data))
    with pytest.raises(RegistryError, match="run record"):
        registry.get(NAME, 1)
    assert any("run record" in p.message for p in errors(registry.check()))


def test_push_refuses_artifacts_that_differ_from_the_run_record(registry, tmp_path):
    run = {"run_id": "r1", "artifacts_digest": "sha256:" + "0" * 64}
    with pytest.raises(UserError, match="changed while tagging"):
        registry.push(NAME, [artifact(tmp_path, b"w")], {"run": run})
    assert registry.version_numbers(NAME) == []


def test_fetch_verifies_while_copying_and_leaves_nothing_unverified(registry, tamper, tmp_path):
    v = registry.push(NAME, [artifact(tmp_path, b"good bytes"), artifact(tmp_path, b"cfg", "config.json")], {}).version
    by_path = {a["path"]: a for a in v.artifacts}
    tamper.replace_blob(by_path["model.bin"]["sha256"], b"evil bytes")  # same size, other bytes
    dest = tmp_path / "out"
    with pytest.raises(RegistryError, match="does not match its digest"):
        registry.fetch(NAME, 1, dest)
    assert not (dest / "model.bin").exists()
    assert all(p.name == "config.json" for p in dest.rglob("*") if p.is_file())


def test_check_runs_the_verifier_on_every_sound_version(registry, tmp_path):
    push_n(registry, tmp_path, 3, aliases=())
    seen = []

    def verifier(mv):
        seen.append(mv.version)
        return "gate signature does not verify" if mv.version == 2 else None

    [p] = registry.check(verifier)
    assert (p.where, p.message, p.severity) == (f"{NAME} v2", "gate signature does not verify", "error")
    assert seen == [1, 2, 3]


# --- history lines -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", [
    lambda e: e.pop("to"), lambda e: e.pop("alias"), lambda e: e.pop("seq"),
    lambda e: e.update(to="3"), lambda e: e.update(alias=7), lambda e: e.update(action="teleport"),
    lambda e: e.update(prev=5), lambda e: e.update({"from": "x"}), lambda e: e.update(to=True),
], ids=["no-to", "no-alias", "no-seq", "to-str", "alias-int", "action", "prev-int", "from-str", "to-bool"])
def test_a_history_line_with_a_missing_key_or_wrong_type_is_a_registry_error(registry, tmp_path, edit):
    push_n(registry, tmp_path, 2)
    raw = history_lines(registry)
    edit(raw[1])
    write_history(registry, raw)
    where = registry.storage.history_location(NAME)
    for call in (lambda: registry.aliases(NAME), lambda: registry.history(NAME), lambda: registry.get(NAME, "production"),
                 lambda: registry.move_alias(NAME, "staging", 1)):
        with pytest.raises(RegistryError, match=f"{where}:2: alias history is damaged") as info:
            call()
        assert not isinstance(info.value, NotFound)
    [p] = errors(registry.check())
    assert p.where == f"{NAME} history" and f"{where}:2" in p.message


def test_reads_refuse_a_broken_chain(populated):
    raw = history_lines(populated)
    raw[1]["to"] = 3
    write_history(populated, raw)
    with pytest.raises(RegistryError, match="breaks the hash chain"):
        populated.get(NAME, "production")


# --- gc ------------------------------------------------------------------------------------------------------


@FILE_ONLY
def test_gc_removes_unreferenced_blobs_only_when_applied_and_old_enough(registry, tamper, tmp_path):
    versions = push_n(registry, tmp_path, 2)
    referenced = {a["sha256"] for v in versions for a in v.artifacts}
    orphan = tamper.add_orphan_blob(b"left by an interrupted tag")
    [item] = registry.gc()  # default: dry run, and the orphan is younger than an hour
    assert (item.kind, item.where, item.action) == ("blob", f"blob {orphan}", item.action)
    assert item.action.startswith("kept: younger than")
    [item] = registry.gc(min_age_s=0)
    assert item.action == "would delete"
    assert orphan in {b.key for b in registry.storage.blobs()}
    [item] = registry.gc(apply=True, min_age_s=0)
    assert item.action == "deleted"
    assert {b.key for b in registry.storage.blobs()} == referenced
    assert registry.gc(apply=True, min_age_s=0) == []
    assert registry.check() == []
    assert registry.fetch(NAME, 1, tmp_path / "out")


@FILE_ONLY
def test_gc_refuses_when_a_manifest_is_too_damaged_to_tell_its_blobs(registry, tamper, tmp_path):
    push_n(registry, tmp_path, 2)
    data = tamper.manifest(NAME, 1)
    del data["artifacts"]
    tamper.replace_manifest(NAME, 1, data)
    tamper.add_orphan_blob(b"x")
    with pytest.raises(RegistryError, match="gc refused"):
        registry.gc(apply=True, min_age_s=0)
    assert len(registry.storage.blobs()) == 3


@FILE_ONLY
def test_gc_keeps_blobs_a_damaged_manifest_still_names(registry, tamper, tmp_path):
    v1, _ = push_n(registry, tmp_path, 2)
    data = tamper.manifest(NAME, 1)
    data["metadata"] = "forged"
    tamper.replace_manifest(NAME, 1, data)
    assert registry.gc(apply=True, min_age_s=0) == []
    assert v1.artifacts[0]["sha256"] in {b.key for b in registry.storage.blobs()}


# --- versions -----------------------------------------------------------------------------------------


def test_versions_are_numbered_and_digested(registry, tmp_path):
    v1, v2, v3 = push_n(registry, tmp_path, 3, aliases=())
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    assert [v.version for v in registry.versions(NAME)] == [1, 2, 3]
    for v in (v1, v2, v3):
        assert v.digest.startswith("sha256:") and v.digest == v.compute_digest()
        [art] = v.artifacts
        assert art["sha256"] == sha256_bytes(f"weights {v.version}".encode())
        assert art["size"] == len(f"weights {v.version}")
        assert art["path"] == "model.bin"
    assert len({v.digest for v in (v1, v2, v3)}) == 3
    assert v2.metadata == {"run": {"run_id": "r2"}}
    assert v1.created and v1.name == NAME


def test_get_by_number_v_name_alias_digest_prefix_and_latest(registry, tmp_path):
    v1, v2, v3 = push_n(registry, tmp_path, 3, aliases=())
    registry.move_alias(NAME, "staging", 2)
    assert registry.get(NAME, 1).digest == v1.digest
    assert registry.get(NAME, "2").digest == v2.digest
    assert registry.get(NAME, "v2").digest == v2.digest
    assert registry.get(NAME, "staging").version == 2
    assert registry.get(NAME, v3.digest).version == 3
    assert registry.get(NAME, v1.digest[:len("sha256:") + 12]).version == 1
    assert registry.get(NAME, "latest").version == 3


def test_ambiguous_digest_prefix_is_an_error(registry, tmp_path):
    push_n(registry, tmp_path, 3, aliases=())
    # "sha256:" is a prefix of every version's digest: picking one silently would be a guess.
    with pytest.raises(RegistryError):
        registry.get(NAME, "sha256:")


def test_unknown_version_alias_and_digest(registry, tmp_path):
    push_n(registry, tmp_path, 2)
    with pytest.raises(RegistryError) as info:
        registry.get(NAME, 9)
    assert str(info.value) == f"model {NAME!r} has no version 9 (versions: 1..2)"
    with pytest.raises(RegistryError) as info:
        registry.get(NAME, "v0")
    assert "no version 0" in str(info.value)
    with pytest.raises(RegistryError) as info:
        registry.get(NAME, "staging")
    assert "no alias 'staging'" in str(info.value) and "production" in str(info.value)
    with pytest.raises(RegistryError) as info:
        registry.get(NAME, "sha256:" + "0" * 64)
    assert "no version with digest" in str(info.value)
    with pytest.raises(RegistryError) as info:
        registry.get("other", "latest")
    assert "'other' has no versions" in str(info.value)


def test_idempotent_re_push(registry, tmp_path):
    files = [artifact(tmp_path, b"w1"), artifact(tmp_path, b"cfg", "config.json")]
    first = registry.push(NAME, files, {"run": {"run_id": "r1"}}, aliases=["candidate"])
    again = registry.push(NAME, list(reversed(files)), {"run": {"run_id": "r1"}}, aliases=["candidate"])
    assert first.created is True and again.created is False
    assert again.version.version == 1 and again.version.digest == first.version.digest
    assert again.aliases == []  # alias already there: no new history entry
    assert len(registry.history(NAME)) == 1
    assert [v.version for v in registry.versions(NAME)] == [1]
    # Same files with a different run record is a new version.
    other = registry.push(NAME, files, {"run": {"run_id": "r2"}})
    assert other.created and other.version.version == 2


def test_fetch_materialises_files(registry, tmp_path):
    files = [artifact(tmp_path, b"\x00weights\xff", "model.bin"), artifact(tmp_path, b"a b c", "vocab/words.txt")]
    registry.push(NAME, files, {})
    registry.push(NAME, [artifact(tmp_path, b"v2")], {})
    dest = registry.fetch(NAME, 1, tmp_path / "out")
    assert (dest / "model.bin").read_bytes() == b"\x00weights\xff"
    assert (dest / "vocab" / "words.txt").read_bytes() == b"a b c"
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == ["model.bin", "vocab/words.txt"]


def test_fetch_with_a_missing_blob_is_a_registry_error(registry, tamper, tmp_path):
    v = registry.push(NAME, [artifact(tmp_path, b"w")], {}).version
    tamper.delete_blob(v.artifacts[0]["sha256"])
    with pytest.raises(RegistryError, match="missing"):
        registry.fetch(NAME, 1, tmp_path / "out")


@FILE_ONLY
def test_same_content_is_stored_once(registry, tmp_path):
    registry.push(NAME, [artifact(tmp_path, b"same", "a.bin")], {"n": 1})
    registry.push(NAME, [artifact(tmp_path, b"same", "a.bin")], {"n": 2})
    assert [b.key for b in registry.storage.blobs()] == [sha256_bytes(b"same")]


# --- aliases and history ----------------------------------------------------------------------------


def test_alias_moves_are_recorded_with_from_to_and_a_hash_chain(registry, tmp_path):
    push_n(registry, tmp_path, 3)  # production -> 1, 2, 3
    registry.move_alias(NAME, "staging", 2, reason="qa")
    assert registry.aliases(NAME) == {"production": 3, "staging": 2}
    events = registry.history(NAME, "production")
    assert [(e.from_, e.to, e.action) for e in events] == [(None, 1, "move"), (1, 2, "move"), (2, 3, "move")]
    raw = history_lines(registry)
    assert [e["seq"] for e in raw] == [1, 2, 3, 4]
    assert raw[0]["prev"] is None
    for before, after in zip(raw, raw[1:]):
        assert after["prev"] == event_digest(before)
    assert raw[3]["alias"] == "staging" and raw[3]["from"] is None and raw[3]["to"] == 2 and raw[3]["reason"] == "qa"
    assert errors(registry.check()) == []


def test_move_alias_to_a_missing_version(registry, tmp_path):
    push_n(registry, tmp_path, 1)
    with pytest.raises(RegistryError, match="no version 5"):
        registry.move_alias(NAME, "production", 5)
    assert registry.aliases(NAME) == {"production": 1}


def test_rollback_walks_back(registry, tmp_path):
    push_n(registry, tmp_path, 3)
    e = registry.rollback(NAME, "production", reason="bad model")
    assert (e.action, e.from_, e.to, e.reason) == ("rollback", 3, 2, "bad model")
    assert registry.get(NAME, "production").version == 2
    e = registry.rollback(NAME, "production")
    assert (e.from_, e.to) == (2, 1)
    assert registry.aliases(NAME)["production"] == 1
    with pytest.raises(RegistryError, match="no previous target"):
        registry.rollback(NAME, "production")
    assert registry.aliases(NAME)["production"] == 1
    assert [e.to for e in registry.history(NAME, "production")] == [1, 2, 3, 2, 1]
    assert errors(registry.check()) == []


def test_rollback_after_a_new_move_returns_to_the_target_before_it(registry, tmp_path):
    push_n(registry, tmp_path, 3)
    registry.rollback(NAME, "production")          # 3 -> 2
    registry.move_alias(NAME, "production", 3)     # 2 -> 3 again
    assert registry.rollback(NAME, "production").to == 2


def test_rollback_with_no_previous_target(registry, tmp_path):
    push_n(registry, tmp_path, 1)
    with pytest.raises(RegistryError) as info:
        registry.rollback(NAME, "production")
    assert "no previous target" in str(info.value)
    with pytest.raises(RegistryError) as info:
        registry.rollback(NAME, "staging")
    assert "no alias 'staging'" in str(info.value)
    assert len(registry.history(NAME)) == 1


# --- check ----------------------------------------------------------------------------------------------


@pytest.fixture()
def populated(registry, tmp_path):
    push_n(registry, tmp_path, 3)
    registry.move_alias(NAME, "staging", 1)
    assert registry.check() == []
    return registry


def test_check_is_clean_on_a_good_registry(populated):
    assert populated.check() == []


def test_check_reports_a_corrupted_blob(populated, tamper):
    digest = populated.get(NAME, 2).artifacts[0]["sha256"]
    tamper.replace_blob(digest, b"bit rot")
    [p] = errors(populated.check())
    assert p.where == f"{NAME} v2" and "corrupt" in p.message and digest[:12] in p.message


def test_check_reports_a_deleted_blob(populated, tamper):
    digest = populated.get(NAME, 3).artifacts[0]["sha256"]
    tamper.delete_blob(digest)
    [p] = errors(populated.check())
    assert p.where == f"{NAME} v3" and "missing" in p.message


def test_check_reports_an_edited_version_manifest(populated, tamper):
    data = tamper.manifest(NAME, 1)
    data["metadata"]["run"]["run_id"] = "forged"
    tamper.replace_manifest(NAME, 1, data)
    [p] = errors(populated.check())
    assert p.where == f"{NAME} v1" and "digest does not match" in p.message


def chain_problems(reg, tamper) -> list:
    """check()'s findings about the chain. On oci:// the per-write trail also sees the rewrite (every earlier
    write is no longer a prefix of the history), which is reported on top and checked here too."""
    problems = errors(reg.check())
    trail = [p for p in problems if "an earlier history write" in p.message]
    assert bool(trail) == isinstance(tamper, OciTamper), problems
    return [p for p in problems if p not in trail]


def test_check_reports_an_edited_history_line(populated, tamper):
    raw = history_lines(populated)
    raw[1]["to"] = 3  # rewrite where production pointed in the past
    write_history(populated, raw)
    problems = chain_problems(populated, tamper)
    assert problems and all("hash chain broken" in p.message for p in problems)
    assert [p.where for p in problems] == [f"{NAME} history #3"]


def test_check_reports_a_removed_history_line(populated, tamper):
    raw = history_lines(populated)
    del raw[1]
    write_history(populated, raw)
    problems = chain_problems(populated, tamper)
    assert problems and all("hash chain broken" in p.message for p in problems)
    assert problems[0].where == f"{NAME} history #2"


def test_check_reports_an_unparseable_history(populated, tamper):
    populated.storage.write_history(NAME, populated.storage.read_history(NAME) + b"{half a line\n")
    [p] = errors(populated.check())
    assert p.where == f"{NAME} history" and "damaged" in p.message


def test_check_reports_an_alias_pointing_at_a_lost_version(populated, tamper):
    tamper.delete_manifest(NAME, 1)
    problems = errors(populated.check())
    assert any("points at missing version 1" in p.message for p in problems)


@FILE_ONLY
def test_check_reports_an_orphan_blob_as_a_warning_only(populated, tamper):
    orphan = tamper.add_orphan_blob(b"left by an interrupted tag")
    problems = populated.check()
    assert errors(problems) == []
    [w] = problems
    assert w.severity == "warning" and w.where == f"blob {orphan[:12]}" and "not referenced" in w.message


# =========================================================================================================
# file:// only: the marker, the directory, flock, temporary files, OS errors, the CLI over a directory.
# =========================================================================================================


@pytest.fixture()
def reg_path(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture()
def reg(reg_path: Path, tmp_path: Path):
    return open_registry(f"file://{reg_path}", tmp_path, create=True)


def test_a_missing_registry_is_not_found_and_not_created(reg_path, tmp_path):
    with pytest.raises(NotFound, match="no registry at"):
        open_registry(f"file://{reg_path}", tmp_path)
    assert not reg_path.exists()
    reg_path.mkdir()  # an empty directory holds nothing either
    with pytest.raises(NotFound, match="no registry at"):
        open_registry(f"file://{reg_path}", tmp_path)


def test_broken_registries_are_errors_not_not_found(tmp_path):
    cases = {}
    f = tmp_path / "a-file"
    f.write_text("x")
    cases["file"] = f
    cases["under-a-file"] = f / "reg"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases["foreign"] = foreign
    for label, marker in {"not-json": b"{oops", "list": b"[1]", "kind": b'{"kind": "x"}',
                          "newer": b'{"kind": "lepton-registry", "schema_version": 99}'}.items():
        d = tmp_path / label
        d.mkdir()
        (d / MARKER).write_bytes(marker)
        cases[label] = d
    d = tmp_path / "marker-dir"
    (d / MARKER).mkdir(parents=True)
    cases["marker-dir"] = d
    for label, path in cases.items():
        for create in (False, True):
            with pytest.raises(RegistryError) as info:
                open_registry(f"file://{path}", tmp_path, create=create)
            assert not isinstance(info.value, NotFound), (label, info.value)
            assert "\n" not in str(info.value)


def test_a_registry_that_vanishes_after_opening_is_an_error_not_a_not_found(reg, reg_path, tmp_path):
    import shutil

    push_n(reg, tmp_path, 1)
    shutil.rmtree(reg_path)
    for call in (lambda: reg.get(NAME, "production"), lambda: reg.get("other", "production"), lambda: reg.models(),
                 lambda: reg.aliases(NAME), lambda: reg.version_numbers(NAME)):
        with pytest.raises(RegistryError, match="vanished") as info:
            call()
        assert not isinstance(info.value, NotFound)


def test_a_damaged_manifest_is_an_error_not_a_not_found(reg, reg_path, tmp_path):
    push_n(reg, tmp_path, 1)
    (reg_path / "models" / NAME / "versions" / "1.json").write_text("{half")
    with pytest.raises(RegistryError, match="damaged") as info:
        reg.get(NAME, "production")
    assert not isinstance(info.value, NotFound)


@pytest.mark.parametrize("err,kind", [(errno.EIO, TransientError), (errno.EACCES, RegistryError)])
def test_os_errors_reading_the_registry_are_one_line_errors_never_empty(reg, reg_path, tmp_path, monkeypatch, err, kind):
    push_n(reg, tmp_path, 2)
    real_listdir = os.listdir

    def failing_listdir(path="."):
        if str(path).endswith("versions"):
            raise OSError(err, os.strerror(err), str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", failing_listdir)
    for call in (lambda: reg.version_numbers(NAME), lambda: reg.get(NAME, "production"), lambda: reg.versions(NAME)):
        with pytest.raises(kind) as info:
            call()
        assert not isinstance(info.value, NotFound) and "\n" not in str(info.value)
        assert os.strerror(err) in str(info.value)
    monkeypatch.undo()
    real_read = Path.read_bytes

    def failing_read(self):
        if self.name in ("history.jsonl", "2.json"):
            raise OSError(err, os.strerror(err), str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    with pytest.raises(kind):
        reg.aliases(NAME)
    problems = errors(reg.check())
    assert {p.where for p in problems} == {f"{NAME} v2", f"{NAME} history"}


def test_os_errors_exit_2_through_the_cli(reg, reg_path, tmp_path, monkeypatch, capsys):
    push_n(reg, tmp_path, 1)
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied", str(self)))
                        if self.name == "1.json" else real_read(self))
    code, out, err = run_cli(capsys, "registry", "-r", f"file://{reg_path}", "-m", NAME, "show", "1")
    assert code == 2 and err.count("\n") == 1 and "Permission denied" in err


def test_temp_files_left_by_killed_writes_are_warnings_with_their_size(reg, reg_path, tmp_path):
    push_n(reg, tmp_path, 1)
    leftovers = {reg_path / "blobs" / "tmp" / "tmpa1b2c3": 1000, reg_path / "blobs" / "tmp" / "tmpd4e5f6": 2500,
                 reg_path / "models" / NAME / "versions" / ".2.json.k2j3c9.tmp": 300,
                 reg_path / "models" / NAME / ".history.jsonl.x1y2.tmp": 200}
    for path, size in leftovers.items():
        path.write_bytes(b"x" * size)
    problems = reg.check()
    assert errors(problems) == []
    [w] = warnings(problems)
    assert w.where == "temporary files" and "4 file(s)" in w.message and "4.0 kB" in w.message and "gc" in w.message
    assert (reg_path / "models" / NAME / ".lock").exists()  # lock files are not leftovers
    assert reg.version_numbers(NAME) == [1]  # ".2.json.k2j3c9.tmp" is no version


def test_gc_of_temp_files_respects_their_age(reg, reg_path, tmp_path):
    push_n(reg, tmp_path, 1)
    old, young = reg_path / "blobs" / "tmp" / "tmpold", reg_path / "blobs" / "tmp" / "tmpyoung"
    manifest_tmp = reg_path / "models" / NAME / "versions" / ".2.json.abc.tmp"
    for p in (old, young, manifest_tmp):
        p.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(manifest_tmp, (two_hours_ago, two_hours_ago))
    items = {i.where: i.action for i in reg.gc()}
    assert items == {"blobs/tmp/tmpold": "would delete", "models/digits/versions/.2.json.abc.tmp": "would delete",
                     "blobs/tmp/tmpyoung": "kept: younger than 60 min (a running tag may own it)"}
    assert old.exists() and manifest_tmp.exists()
    reg.gc(apply=True)
    assert not old.exists() and not manifest_tmp.exists() and young.exists()
    reg.gc(apply=True, min_age_s=0)
    assert not young.exists()
    assert (reg_path / "models" / NAME / ".lock").exists()
    assert reg.check() == []


def test_storage_refuses_to_delete_what_is_not_a_temp_file(reg, reg_path, tmp_path):
    from lepton_ci.registry.base import Stored

    push_n(reg, tmp_path, 1)
    for key in ("models/digits/versions/1.json", "../outside.tmp", "lepton-registry.json", "models/digits/.lock"):
        with pytest.raises(RegistryError):
            reg.storage.delete(Stored("temp", key, 0, 1e9))
    assert reg.version_numbers(NAME) == [1]


def test_put_blob_refreshes_an_existing_blob(reg, reg_path, tmp_path):
    v = push_n(reg, tmp_path, 1)[0]
    blob = reg_path / "blobs" / "sha256" / v.artifacts[0]["sha256"]
    os.utime(blob, (0, 0))
    blob.write_bytes(b"rotten!!!")  # same size, wrong bytes
    os.utime(blob, (0, 0))
    reg.push(NAME, [artifact(tmp_path, b"weights 1")], {"run": {"run_id": "again"}})
    assert blob.read_bytes() == b"weights 1" and blob.stat().st_mtime > 0  # repaired, and young for gc


# --- the CLI -------------------------------------------------------------------------------------------------


def test_cli_promote_refuses_an_alias_with_a_trailing_newline(reg, reg_path, tmp_path, capsys):
    push_n(reg, tmp_path, 1)
    code, out, err = run_cli(capsys, "registry", "-r", f"file://{reg_path}", "-m", NAME, "promote", "1", "production\n")
    assert code == 2 and "not valid" in err
    code, out, err = run_cli(capsys, "registry", "-r", f"file://{reg_path}", "-m", "digits\n", "show", "1")
    assert code == 2 and "not valid" in err
    assert reg.aliases(NAME) == {"production": 1}


def test_cli_a_history_line_missing_a_key_exits_2(reg, reg_path, tmp_path, capsys):
    push_n(reg, tmp_path, 2)
    path = reg_path / "models" / NAME / "history.jsonl"
    lines = path.read_text().splitlines()
    event = json.loads(lines[1])
    del event["to"]
    lines[1] = json.dumps(event)
    path.write_text("\n".join(lines) + "\n")
    for cmd in (["history"], ["show", "production"], ["list"], ["rollback", "production"]):
        code, out, err = run_cli(capsys, "registry", "-r", f"file://{reg_path}", "-m", NAME, *cmd)
        assert code == 2, (cmd, err)
        assert f"{path}:2: alias history is damaged (event lacks 'to')" in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "registry", "-r", f"file://{reg_path}", "check")
    assert code == 1 and f"{path}:2" in out


def test_cli_gc_dry_run_then_apply(reg, reg_path, tmp_path, capsys):
    push_n(reg, tmp_path, 1)
    leftover = reg_path / "blobs" / "tmp" / "tmpkilled"
    leftover.write_bytes(b"x" * 5000)
    base = ["registry", "-r", f"file://{reg_path}"]
    code, out, err = run_cli(capsys, *base, "check")
    assert code == 0 and "warning: temporary files: 1 file(s), 5.0 kB" in out
    code, out, err = run_cli(capsys, *base, "gc")
    assert code == 0 and "kept: younger than" in out and leftover.exists()
    code, out, err = run_cli(capsys, *base, "gc", "--now")
    assert code == 0 and "would delete: temp blobs/tmp/tmpkilled" in out and "dry run" in out and leftover.exists()
    code, out, err = run_cli(capsys, *base, "gc", "--min-age", "0", "--json")
    assert json.loads(out) == [{"kind": "temp", "where": "blobs/tmp/tmpkilled", "size": 5000,
                                "age_s": json.loads(out)[0]["age_s"], "action": "would delete"}]
    code, out, err = run_cli(capsys, *base, "gc", "--yes", "--now")
    assert code == 0 and "deleted 1 file(s), 5.0 kB" in out and not leftover.exists()
    code, out, err = run_cli(capsys, *base, "gc", "--min-age", "soon")
    assert code == 2 and "not an age" in err
    code, out, err = run_cli(capsys, *base, "check")
    assert code == 0 and "OK (0 warning(s))" in out


def test_cli_check_reports_a_model_file_that_escapes(reg, reg_path, tmp_path, capsys):
    reg.push(NAME, [artifact(tmp_path, b"w")], {"model_file": "model.bin"})
    path = reg_path / "models" / NAME / "versions" / "1.json"
    data = json.loads(path.read_text())
    data["metadata"]["model_file"] = "/etc/passwd"
    path.write_text(json.dumps(_redigest(data)))
    code, out, err = run_cli(capsys, "registry", "-r", f"file://{reg_path}", "check")
    assert code == 1 and "metadata.model_file" in out and "absolute" in out


# --- opening (file://) ---------------------------------------------------------------------------------


def test_push_creates_the_registry(reg_path, tmp_path):
    assert not reg_path.exists()
    reg = open_registry(f"file://{reg_path}", tmp_path, create=True)
    assert json.loads((reg_path / MARKER).read_text())["kind"] == "lepton-registry"
    result = reg.push(NAME, [artifact(tmp_path, b"w")], {})
    assert result.created and result.version.version == 1
    # A second open (without create) finds it.
    again = open_registry(f"file://{reg_path}", tmp_path)
    assert again.models() == [NAME]


def test_relative_url_is_relative_to_base_dir(tmp_path):
    reg = open_registry("file://.lepton/registry", tmp_path, create=True)
    reg.push(NAME, [artifact(tmp_path, b"w")], {})
    assert (tmp_path / ".lepton" / "registry" / MARKER).is_file()


def test_opening_a_missing_registry_without_create(reg_path, tmp_path):
    with pytest.raises(RegistryError) as info:
        open_registry(f"file://{reg_path}", tmp_path)
    assert "no registry at" in str(info.value) and str(reg_path) in str(info.value)
    assert not reg_path.exists()


@pytest.mark.parametrize("create", [False, True])
def test_a_directory_that_is_not_a_registry_is_refused_and_untouched(tmp_path, create):
    d = tmp_path / "project"
    (d / "src").mkdir(parents=True)
    (d / "README.md").write_text("mine")
    before = sorted(p.relative_to(d) for p in d.rglob("*"))
    with pytest.raises(RegistryError) as info:
        open_registry(f"file://{d}", tmp_path, create=create)
    assert "not a lepton-ci registry" in str(info.value)
    assert sorted(p.relative_to(d) for p in d.rglob("*")) == before
    assert (d / "README.md").read_text() == "mine"


def test_a_file_is_not_a_registry(tmp_path):
    f = tmp_path / "reg"
    f.write_text("x")
    with pytest.raises(RegistryError, match="not a lepton-ci registry"):
        open_registry(f"file://{f}", tmp_path, create=True)
    assert f.read_text() == "x"


def test_a_marker_of_another_kind_is_refused(tmp_path):
    d = tmp_path / "reg"
    d.mkdir()
    (d / MARKER).write_text('{"kind": "something-else"}')
    with pytest.raises(RegistryError, match="not a lepton-ci registry"):
        open_registry(f"file://{d}", tmp_path)


def test_unknown_scheme(tmp_path):
    with pytest.raises(RegistryError, match="not understood"):
        open_registry("s3://bucket/x", tmp_path)


# --- immutability and concurrency ------------------------------------------------------------------------


def test_version_files_are_never_rewritten(reg, reg_path, tmp_path):
    push_n(reg, tmp_path, 1)
    v1 = reg_path / "models" / NAME / "versions" / "1.json"
    before = (v1.read_bytes(), v1.stat().st_ino, v1.stat().st_mtime_ns)
    push_n(reg, tmp_path, 3)  # r1 again (idempotent), then r2, r3
    reg.move_alias(NAME, "staging", 1)
    reg.rollback(NAME, "production")
    assert (v1.read_bytes(), v1.stat().st_ino, v1.stat().st_mtime_ns) == before
    assert [v.version for v in reg.versions(NAME)] == [1, 2, 3]


PUSHER = """
import sys, time
from pathlib import Path
from lepton_ci.registry import open_registry
root, src, who, n, go = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
reg = open_registry("file://" + root, Path("."), create=True)
src.mkdir(parents=True, exist_ok=True)
(src / "ready").touch()
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:  # start both pushers at the same moment
    time.sleep(0.001)
for i in range(n):
    f = src / f"model-{i}.bin"
    f.write_bytes(f"{who} {i}".encode())
    r = reg.push("digits", [("model.bin", f)], {"run": {"run_id": f"{who}-{i}"}}, aliases=["candidate"])
    print(r.version.version, flush=True)
    time.sleep(0.02)  # let the other pusher in between (the lock is polled, not queued)
"""


def test_concurrent_pushes_from_two_processes(reg, reg_path, tmp_path):
    n = 12
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, str(reg_path), str(tmp_path / who), who, str(n), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]
    deadline = time.monotonic() + 30
    while not all((tmp_path / who / "ready").exists() for who in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    per_process = [[int(x) for x in out.split()] for out, _ in outs]
    assert all(len(got) == n for got in per_process)
    numbers = per_process[0] + per_process[1]
    assert sorted(numbers) == list(range(1, 2 * n + 1))  # distinct, no gaps, none lost
    versions = reg.versions(NAME)
    assert [v.version for v in versions] == list(range(1, 2 * n + 1))
    assert sorted(v.metadata["run"]["run_id"] for v in versions) == sorted(f"{w}-{i}" for w in "ab" for i in range(n))
    assert len(reg.history(NAME, "candidate")) == 2 * n
    assert reg.check() == []


def test_concurrent_pushes_from_two_threads(reg, reg_path, tmp_path):
    barrier = threading.Barrier(2)
    got: dict[str, list[int]] = {}
    failures: list[BaseException] = []

    def worker(who: str) -> None:
        try:
            r = open_registry(f"file://{reg_path}", tmp_path)  # its own instance, as another job would have
            barrier.wait()
            got[who] = [r.push(NAME, [artifact(tmp_path, f"{who}{i}".encode())], {"who": who, "i": i},
                               aliases=["candidate"]).version.version for i in range(5)]
        except BaseException as exc:  # surface in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(got["a"] + got["b"]) == list(range(1, 11))
    assert reg.check() == []


def test_concurrent_first_pushes_into_a_new_registry(tmp_path):
    # Two tag jobs running at once against a registry that does not exist yet must both succeed.
    for attempt in range(40):
        root = Path(tempfile.mkdtemp(dir=tmp_path)) / "reg"
        barrier = threading.Barrier(2)
        failures: list[BaseException] = []

        def worker(who: str) -> None:
            try:
                barrier.wait()
                r = open_registry(f"file://{root}", tmp_path, create=True)
                r.push(NAME, [artifact(tmp_path, who.encode())], {"who": who})
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in (f"a{attempt}", f"b{attempt}")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [], f"attempt {attempt}: {failures[0]}"
        reg = open_registry(f"file://{root}", tmp_path)
        assert [v.version for v in reg.versions(NAME)] == [1, 2]


# --- encryption at rest ---------------------------------------------------------------------------------------


@pytest.fixture()
def registry_key(monkeypatch: pytest.MonkeyPatch) -> str:
    from lepton_ci.registry.encryption import new_key_text

    key = new_key_text()
    monkeypatch.setenv("LEPTON_CI_REGISTRY_KEY", key)
    return key


def test_encrypted_versions_round_trip_and_the_registry_holds_only_ciphertext(registry, tamper, tmp_path, registry_key,
                                                                              monkeypatch):
    from lepton_ci.registry.encryption import CIPHER, SEGMENT, parse_key

    big = os.urandom(2 * SEGMENT + 12345)  # three segments
    mv = registry.push(NAME, [artifact(tmp_path, big), artifact(tmp_path, b"", "empty.txt")], {"n": 1},
                       aliases=["production"]).version
    by_path = {a["path"]: a for a in mv.artifacts}
    art = by_path["model.bin"]
    assert art["sha256"] == sha256_bytes(big) and art["size"] == len(big)  # the plaintext, as the gate signs it
    assert art["stored"]["cipher"] == CIPHER and art["stored"]["key_id"] == parse_key(registry_key).key_id
    stream = registry.storage.open_blob(NAME, art["stored"]["sha256"])
    with stream:
        raw = stream.read()
    assert big[:4096] not in raw and len(raw) == art["stored"]["size"] and sha256_bytes(raw) == art["stored"]["sha256"]
    out = registry.fetch(NAME, "production", tmp_path / "out")
    assert (out / "model.bin").read_bytes() == big and (out / "empty.txt").read_bytes() == b""
    assert registry.check() == []
    # The same plaintext encrypts to the same bytes: stored once, and an identical push is idempotent.
    again = registry.push(NAME, [artifact(tmp_path, big), artifact(tmp_path, b"", "empty.txt")], {"n": 2}).version
    assert again.artifacts[0]["stored"]["sha256"] in {a["stored"]["sha256"] for a in mv.artifacts}

    # Without the key: reads that need the bytes refuse in one line; check still verifies the stored bytes.
    monkeypatch.delenv("LEPTON_CI_REGISTRY_KEY")
    with pytest.raises(RegistryError, match=f"is encrypted \\(key {art['stored']['key_id']}\\): set LEPTON_CI_REGISTRY_KEY"):
        registry.fetch(NAME, 1, tmp_path / "nokey")
    assert registry.check() == []
    from lepton_ci.registry.encryption import new_key_text

    monkeypatch.setenv("LEPTON_CI_REGISTRY_KEY", new_key_text())
    with pytest.raises(RegistryError, match="wrong key"):
        registry.fetch(NAME, 1, tmp_path / "wrongkey")
    assert not (tmp_path / "wrongkey" / "model.bin").exists()


@pytest.mark.parametrize("damage", ["flip", "cut-at-segment", "swap-segments"])
def test_a_changed_encrypted_blob_never_decrypts_to_garbage(registry, tamper, tmp_path, registry_key, monkeypatch,
                                                           damage):
    from lepton_ci.registry.encryption import HEADER, SEGMENT, TAG

    big = os.urandom(2 * SEGMENT + 100)
    mv = registry.push(NAME, [artifact(tmp_path, big)], {}).version
    stored = mv.artifacts[0]["stored"]
    with registry.storage.open_blob(NAME, stored["sha256"]) as f:
        raw = f.read()
    seg = SEGMENT + TAG
    if damage == "flip":
        bad = raw[:HEADER + 10] + bytes([raw[HEADER + 10] ^ 1]) + raw[HEADER + 11:]
    elif damage == "cut-at-segment":
        bad = raw[:HEADER + seg]  # a whole, valid first segment and nothing after it
    else:
        bad = raw[:HEADER] + raw[HEADER + seg:HEADER + 2 * seg] + raw[HEADER:HEADER + seg] + raw[HEADER + 2 * seg:]
    tamper.replace_blob(stored["sha256"], bad)
    dest = tmp_path / "out"
    with pytest.raises(RegistryError, match="cannot decrypt|another size|does not match"):
        registry.fetch(NAME, 1, dest)
    assert not (dest / "model.bin").exists()
    assert errors(registry.check())
    monkeypatch.delenv("LEPTON_CI_REGISTRY_KEY")
    assert errors(registry.check())  # without the key, the stored bytes' digest still catches it


def test_a_bad_registry_key_is_a_one_line_config_error(registry, tmp_path, monkeypatch):
    from lepton_ci.errors import ConfigError

    monkeypatch.setenv("LEPTON_CI_REGISTRY_KEY", "not-a-key")
    with pytest.raises(ConfigError, match="LEPTON_CI_REGISTRY_KEY is not a registry key: expected 32 bytes"):
        registry.push(NAME, [artifact(tmp_path, b"w")], {})
    assert registry.version_numbers(NAME) == []


def test_copy_moves_encrypted_versions_without_the_key(backend, tmp_path, registry_key, monkeypatch):
    reg = backend.registry
    big = os.urandom(1500)
    reg.push(NAME, [artifact(tmp_path, big)], {"run": {"run_id": "r1"}}, aliases=["production"])
    dest = open_registry(f"file://{tmp_path / 'copy'}", tmp_path, create=True)
    monkeypatch.delenv("LEPTON_CI_REGISTRY_KEY")
    reg.copy_to(dest, [NAME])
    assert dest.check() == []
    monkeypatch.setenv("LEPTON_CI_REGISTRY_KEY", registry_key)
    assert (dest.fetch(NAME, "production", tmp_path / "out") / "model.bin").read_bytes() == big


def test_transfers_show_progress_only_on_a_terminal(backend, tmp_path, monkeypatch, capsys):
    from lepton_ci import progress

    big = os.urandom(progress.MIN_BYTES + 1)
    monkeypatch.setenv("LEPTON_CI_PROGRESS", "1")  # as if stderr were a terminal
    backend.registry.push(NAME, [artifact(tmp_path, big)], {})
    backend.registry.fetch(NAME, 1, tmp_path / "out")
    shown = capsys.readouterr().err
    assert "fetch model.bin" in shown and ("push model.bin" in shown or backend.name == "file")
    monkeypatch.delenv("LEPTON_CI_PROGRESS")  # pytest's stderr is not a terminal: nothing is drawn
    backend.registry.fetch(NAME, 1, tmp_path / "out2")
    assert capsys.readouterr().err == ""
    assert not progress.wanted(progress.MIN_BYTES - 1)
