"""lepton_ci/records.py and lepton_ci/signing.py: JSON round trips, version checks, ECDSA over gate records,
OpenSSF model-signing over model files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_ci import signing
from lepton_ci.errors import UserError
from tests.support.keys import OTHER_PRIVATE_PEM, OTHER_PUBLIC_PEM, PRIVATE_ONE_LINE, PRIVATE_PEM, PUBLIC_PEM
from lepton_ci.records import Deployment, GateRecord, ModelVersion, RunRecord, artifacts_digest, check_finite_metrics


def make_gate(**over) -> GateRecord:
    fields = dict(
        model="digits",
        candidate={"digest": "sha256:" + "a" * 64, "metrics": {"eval.accuracy": 0.93, "eval.loss": 0.21}},
        baseline={"source": "registry:production", "version": 3, "metrics": {"eval.accuracy": 0.92}},
        results=[{"metric": "eval.accuracy", "rule": "max_drop", "threshold": 0.02, "observed": 0.93,
                  "baseline": 0.92, "delta": 0.01, "passed": True, "reason": "gain 0.01"}],
        verdict="pass",
        created="2024-01-01T00:00:00.000Z",
    )
    fields.update(over)
    return GateRecord(**fields)


# --- records ------------------------------------------------------------------------------------------


def test_run_record_round_trip_preserves_unknown_fields(tmp_path):
    data = {
        "schema_version": 1, "kind": "run", "run_id": "r1", "model": "digits",
        "metrics": {"eval.accuracy": 0.93}, "artifacts": [{"path": "model.joblib", "sha256": "ab" * 32, "size": 3}],
        "exit": {"status": "succeeded", "code": 0},
        "added_by_a_newer_release": {"nested": [1, 2, {"x": None}]}, "another": "kept",
    }
    p = tmp_path / "run.json"
    p.write_text(json.dumps(data))
    rec = RunRecord.read(p)
    assert rec.run_id == "r1" and rec.metrics == {"eval.accuracy": 0.93}
    assert rec.succeeded
    assert rec.extra == {"added_by_a_newer_release": {"nested": [1, 2, {"x": None}]}, "another": "kept"}
    out = tmp_path / "out" / "run.json"
    rec.write(out)
    written = json.loads(out.read_text())
    assert written["added_by_a_newer_release"] == {"nested": [1, 2, {"x": None}]}
    assert written["another"] == "kept"
    assert written["kind"] == "run" and written["schema_version"] == 1
    # Reading what we wrote gives the same record again.
    again = RunRecord.read(out)
    assert again == rec and again.extra == rec.extra
    assert all(written[k] == v for k, v in data.items())


@pytest.mark.parametrize("cls, kind", [(RunRecord, "run"), (GateRecord, "gate"), (ModelVersion, "model-version"),
                                       (Deployment, "deployment")])
def test_every_record_kind_round_trips(tmp_path, cls, kind):
    rec = cls()
    p = rec.write(tmp_path / f"{kind}.json")
    assert json.loads(p.read_text())["kind"] == kind
    assert cls.read(p) == rec


def test_older_schema_version_is_read():
    rec = RunRecord.from_dict({"kind": "run", "schema_version": 0, "run_id": "x"})
    assert rec.run_id == "x"


def test_wrong_kind_names_the_file(tmp_path):
    p = tmp_path / "gate.json"
    RunRecord(run_id="r").write(p)
    with pytest.raises(UserError) as info:
        GateRecord.read(p)
    assert info.value.where == str(p)
    assert "expected a gate record, found kind 'run'" in info.value.message


@pytest.mark.parametrize("version", [2, 99, "1", None])
def test_newer_or_bad_schema_version_names_the_file(tmp_path, version):
    p = tmp_path / "run.json"
    p.write_text(json.dumps({"kind": "run", "schema_version": version}))
    with pytest.raises(UserError) as info:
        RunRecord.read(p)
    assert info.value.where == str(p)
    assert f"schema_version {version!r} is not supported" in info.value.message


@pytest.mark.parametrize("text", ["{not json", "", "{}]", "{'single': 1}"])
def test_not_json_names_the_file(tmp_path, text):
    p = tmp_path / "run.json"
    p.write_text(text)
    with pytest.raises(UserError) as info:
        RunRecord.read(p)
    assert info.value.where == str(p)
    assert "not valid JSON" in info.value.message


def test_binary_file_is_a_user_error(tmp_path):
    p = tmp_path / "run.json"
    p.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(UserError) as info:
        RunRecord.read(p)
    assert info.value.where == str(p)


def test_json_that_is_not_an_object(tmp_path):
    p = tmp_path / "run.json"
    p.write_text("[1, 2]")
    with pytest.raises(UserError) as info:
        RunRecord.read(p)
    assert info.value.where == str(p)
    assert "JSON object" in info.value.message


def test_missing_record_file(tmp_path):
    with pytest.raises(UserError) as info:
        GateRecord.read(tmp_path / "gate.json")
    assert info.value.where == str(tmp_path / "gate.json")
    assert "not found" in info.value.message


def test_artifacts_digest_is_order_independent_and_content_sensitive():
    a = [{"path": "model.joblib", "sha256": "1" * 64, "size": 10}, {"path": "vocab.txt", "sha256": "2" * 64}]
    digest = artifacts_digest(a)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert artifacts_digest(list(reversed(a))) == digest
    assert artifacts_digest([dict(a[0], size=999), a[1]]) == digest  # size is not content
    assert artifacts_digest([dict(a[0], sha256="3" * 64), a[1]]) != digest
    assert artifacts_digest([dict(a[0], path="other.joblib"), a[1]]) != digest
    assert artifacts_digest(a[:1]) != digest
    # Swapping which file holds which content changes the digest too.
    swapped = [dict(a[0], sha256=a[1]["sha256"]), dict(a[1], sha256=a[0]["sha256"])]
    assert artifacts_digest(swapped) != digest


def test_model_version_digest_covers_the_manifest():
    mv = ModelVersion(name="m", version=1, artifacts=[{"path": "f", "sha256": "0" * 64, "size": 1}],
                      metadata={"run": {"metrics": {"acc": 0.9}}}, created="t")
    mv.digest = mv.compute_digest()
    assert mv.metrics == {"acc": 0.9}
    same = ModelVersion.from_dict(json.loads(json.dumps(mv.to_dict())))
    assert same.compute_digest() == mv.digest
    same.metadata["run"]["metrics"]["acc"] = 0.99
    assert same.compute_digest() != mv.digest


def test_check_finite_metrics():
    check_finite_metrics({"a": 1, "b": 0.5}, "run.json")
    with pytest.raises(UserError) as info:
        check_finite_metrics({"a": float("nan")}, "run.json")
    assert info.value.where == "run.json" and "'a'" in info.value.message


# --- signing ------------------------------------------------------------------------------------------


def public(pem: str = PUBLIC_PEM) -> list[signing.PublicKey]:
    return [signing.parse_public_key(pem, Path("."), "test key")]


def private(pem: str = PRIVATE_PEM) -> signing.PrivateKey:
    return signing.decode_private(pem, "test key")


def test_private_key_from_pem_one_line_or_file(monkeypatch, tmp_path):
    monkeypatch.delenv("LEPTON_CI_SIGNING_KEY_FILE", raising=False)
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY", PRIVATE_PEM)
    kid = signing.load_private_key().public.key_id
    assert kid == public()[0].key_id
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY", PRIVATE_ONE_LINE)
    assert signing.load_private_key().public.key_id == kid
    monkeypatch.delenv("LEPTON_CI_SIGNING_KEY")
    (tmp_path / "k.pem").write_text(PRIVATE_PEM)
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY_FILE", str(tmp_path / "k.pem"))
    assert signing.load_private_key().public.key_id == kid


@pytest.mark.parametrize("value", ["test-signing-key-not-a-secret", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                                   PUBLIC_PEM, "aGVsbG8="])
def test_a_bad_private_key_is_one_line_without_the_value(monkeypatch, value):
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY", value)
    with pytest.raises(UserError) as info:
        signing.load_private_key()
    assert "LEPTON_CI_SIGNING_KEY" in str(info.value) and "keys generate" in str(info.value)
    assert value.strip() not in str(info.value) and "\n" not in str(info.value)


def test_sign_and_verify_with_the_public_key_only():
    rec = signing.sign(make_gate(), private())
    assert rec.signature["alg"] == "ecdsa-p256-sha256"
    assert rec.signature["key_id"] == public()[0].key_id
    assert "PRIVATE" not in json.dumps(rec.to_dict())
    ok, reason = signing.verify(rec, public())
    assert ok, reason


def test_signature_survives_a_file_round_trip(tmp_path):
    rec = signing.sign(make_gate(extra={"future_field": {"x": 1}}), private())
    back = GateRecord.read(rec.write(tmp_path / "gate.json"))
    assert signing.verify(back, public())[0]


@pytest.mark.parametrize("tamper", [
    lambda r: setattr(r, "verdict", "fail"),
    lambda r: r.candidate["metrics"].__setitem__("eval.accuracy", 0.99),
    lambda r: r.candidate.__setitem__("digest", "sha256:" + "b" * 64),
    lambda r: r.candidate.__setitem__("run_id", "another-run"),
    lambda r: r.baseline.__setitem__("version", 4),
    lambda r: r.results[0].__setitem__("passed", False),
    lambda r: r.results.append({"metric": "x", "passed": True}),
    lambda r: setattr(r, "model", "other"),
    lambda r: setattr(r, "created", "2030-01-01T00:00:00.000Z"),
])
def test_tampering_with_any_signed_field_breaks_verification(tamper):
    rec = signing.sign(make_gate(), private())
    tamper(rec)
    ok, reason = signing.verify(rec, public())
    assert ok is False and "changed after it was signed" in reason


def test_tampering_in_the_file_breaks_verification(tmp_path):
    p = signing.sign(make_gate(verdict="fail"), private()).write(tmp_path / "gate.json")
    data = json.loads(p.read_text())
    data["verdict"] = "pass"
    p.write_text(json.dumps(data))
    ok, reason = signing.verify(GateRecord.read(p), public())
    assert not ok and "changed" in reason


def test_a_new_field_or_schema_version_keeps_old_signatures_valid(tmp_path):
    """Records written by this release verify with the next one, which may add fields and bump versions."""
    from dataclasses import dataclass
    from typing import ClassVar

    p = signing.sign(make_gate(), private()).write(tmp_path / "gate.json")

    @dataclass
    class NextGateRecord(GateRecord):
        SCHEMA_VERSION: ClassVar[int] = 7
        review: str = "added later"

    back = NextGateRecord.read(p)
    assert back.to_dict()["schema_version"] == 7
    assert signing.verify(back, public())[0]
    back.extra["annotation"] = "unsigned fields are kept but never trusted"
    assert signing.verify(back, public())[0]


def test_the_manifest_digest_is_independent_of_the_schema_version():
    from dataclasses import dataclass
    from typing import ClassVar

    mv = ModelVersion(name="m", version=1, artifacts=[{"path": "f", "sha256": "0" * 64, "size": 1}], created="t")
    mv.digest = mv.compute_digest()

    @dataclass
    class NextVersion(ModelVersion):
        SCHEMA_VERSION: ClassVar[int] = 3
        signatures: list = None  # type: ignore[assignment]

    later = NextVersion.from_dict(mv.to_dict())
    assert later.compute_digest() == mv.digest and later.digest_matches()


def test_a_legacy_manifest_digest_still_matches():
    from lepton_ci.fsutil import canonical_json, sha256_bytes

    mv = ModelVersion(name="m", version=1, artifacts=[{"path": "f", "sha256": "0" * 64, "size": 1}], created="t")
    body = mv.to_dict()
    body.pop("digest")
    mv.digest = "sha256:" + sha256_bytes(canonical_json(body))
    assert mv.digest != mv.compute_digest() and mv.digest_matches()
    mv.created = "t2"
    assert not mv.digest_matches()


def test_another_key_is_not_trusted():
    rec = signing.sign(make_gate(), private(OTHER_PRIVATE_PEM))
    ok, reason = signing.verify(rec, public())
    assert ok is False and "not a trusted key" in reason
    assert signing.verify(rec, public() + public(OTHER_PUBLIC_PEM))[0]  # during a key rotation both are trusted


def test_forged_key_id_still_fails():
    rec = signing.sign(make_gate(), private(OTHER_PRIVATE_PEM))
    rec.signature["key_id"] = public()[0].key_id
    ok, reason = signing.verify(rec, public())
    assert ok is False and "does not match" in reason


@pytest.mark.parametrize("alg, message", [("none", "unsigned"), (None, "unsigned"),
                                          ("hmac-sha256", "HMAC"), ("ECDSA-P256-SHA256", "is not"),
                                          ("ecdsa-p384-sha384", "is not")])
def test_alg_games_are_refused(alg, message):
    rec = signing.sign(make_gate(), private())
    rec.signature["alg"] = alg
    ok, reason = signing.verify(rec, public())
    assert ok is False and message in reason


@pytest.mark.parametrize("value", ["", "!!!", "AAAA", None, 5])
def test_garbage_signature_values_are_refused(value):
    rec = signing.sign(make_gate(), private())
    rec.signature["value"] = value
    assert signing.verify(rec, public())[0] is False


def test_no_key_writes_an_unsigned_record():
    rec = signing.sign(make_gate(), None)
    assert rec.signature["alg"] == "none" and "LEPTON_CI_SIGNING_KEY" in rec.signature["reason"]
    ok, reason = signing.verify(rec, public())
    assert ok is False and "unsigned" in reason


def test_a_signed_record_without_trusted_keys_is_refused():
    ok, reason = signing.verify(signing.sign(make_gate(), private()), [])
    assert ok is False and "signing.public_key" in reason and "LEPTON_CI_PUBLIC_KEY" in reason


def test_trusted_keys_fall_back_to_the_private_keys_public_half(monkeypatch):
    monkeypatch.delenv("LEPTON_CI_PUBLIC_KEY", raising=False)
    monkeypatch.delenv("LEPTON_CI_SIGNING_KEY_FILE", raising=False)
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY", PRIVATE_PEM)
    assert [k.key_id for k in signing.trusted_keys()] == [public()[0].key_id]
    monkeypatch.setenv("LEPTON_CI_PUBLIC_KEY", OTHER_PUBLIC_PEM)  # a configured key wins: no fallback then
    assert [k.key_id for k in signing.trusted_keys()] == [public(OTHER_PUBLIC_PEM)[0].key_id]


def test_generate_writes_a_private_key_only_its_owner_can_read(tmp_path):
    priv, pub = signing.generate_pair(tmp_path)
    assert os.stat(priv).st_mode & 0o777 == 0o600
    assert signing.decode_private(priv.read_text(), "k").public.key_id == signing.key_id_of_pem(pub.read_bytes())
    with pytest.raises(UserError):
        signing.generate_pair(tmp_path)


# --- OpenSSF model signing over the files -------------------------------------------------------------


def _model_dir(root: Path) -> Path:
    d = root / "model"
    (d / "sub").mkdir(parents=True)
    (d / "model.joblib").write_bytes(os.urandom(2048))
    (d / "sub" / "vocab.txt").write_text("a\nb\n")
    return d


def _model_signing_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "model_signing", *args], capture_output=True, text=True, timeout=120)


def test_model_signing_cli_verifies_the_files_and_rejects_a_changed_byte(tmp_path):
    """A third party needs only the public key and the package's own CLI."""
    d = _model_dir(tmp_path)
    rec = signing.sign(make_gate(), private(), d)
    ms = rec.signature["model_signature"]
    assert ms["digest"] == signing.bundle_digest(ms["bundle"])
    sig, pub = tmp_path / "model.sig", tmp_path / "pub.pem"
    sig.write_text(json.dumps(ms["bundle"]))
    pub.write_text(PUBLIC_PEM)
    ok = _model_signing_cli("verify", "key", str(d), "--signature", str(sig), "--public_key", str(pub))
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert signing.verify_model_dir(d, ms["bundle"], public()[0]) is None
    data = bytearray((d / "model.joblib").read_bytes())
    data[100] ^= 1
    (d / "model.joblib").write_bytes(bytes(data))
    bad = _model_signing_cli("verify", "key", str(d), "--signature", str(sig), "--public_key", str(pub))
    assert bad.returncode != 0
    assert "does not verify" in signing.verify_model_dir(d, ms["bundle"], public()[0])


@pytest.mark.parametrize("change", ["extra file", "removed file", "git-looking file", "other key"])
def test_model_signature_rejects_any_change_to_the_file_set(tmp_path, change):
    d = _model_dir(tmp_path)
    bundle = signing.sign(make_gate(), private(), d).signature["model_signature"]["bundle"]
    key = public()[0]
    if change == "extra file":
        (d / "payload.pkl").write_bytes(b"x")
    elif change == "removed file":
        (d / "sub" / "vocab.txt").unlink()
    elif change == "git-looking file":
        (d / ".gitattributes").write_text("* binary\n")
    else:
        key = public(OTHER_PUBLIC_PEM)[0]
    assert signing.verify_model_dir(d, bundle, key) is not None


def test_the_gate_signature_binds_the_model_signature(tmp_path):
    d = _model_dir(tmp_path)
    rec = signing.sign(make_gate(), private(), d)
    other = tmp_path / "other"
    other.mkdir()
    (other / "evil.pkl").write_bytes(b"evil")
    rec.signature["model_signature"]["bundle"] = signing.sign_model_dir(other, private())
    assert signing.verify(rec, public()) == (False, "the model signature in the gate record does not match its digest")
    rec.signature["model_signature"]["digest"] = signing.bundle_digest(rec.signature["model_signature"]["bundle"])
    ok, reason = signing.verify(rec, public())
    assert ok is False and "changed after it was signed" in reason


def test_a_pinned_key_replaces_the_keys_lepton_yml_names(monkeypatch, tmp_path):
    """lepton.yml may come from the pull request being deployed: a key it adds must not join a pinned one."""
    monkeypatch.delenv("LEPTON_CI_SIGNING_KEY", raising=False)
    (tmp_path / "atk.pub").write_text(OTHER_PUBLIC_PEM)
    (tmp_path / "real.pub").write_text(PUBLIC_PEM)
    from_config = ["real.pub", "atk.pub"]
    monkeypatch.setenv("LEPTON_CI_PUBLIC_KEY", PUBLIC_PEM)
    keys = signing.trusted_keys(config_values=from_config, base_dir=tmp_path)
    assert [k.key_id for k in keys] == [public()[0].key_id]
    assert not signing.verify(signing.sign(make_gate(), private(OTHER_PRIVATE_PEM)), keys)[0]
    keys = signing.trusted_keys(explicit=[str(tmp_path / "real.pub")], config_values=from_config, base_dir=tmp_path)
    assert [k.key_id for k in keys] == [public()[0].key_id]
    monkeypatch.setenv("LEPTON_CI_PUBLIC_KEY", PUBLIC_PEM + OTHER_PUBLIC_PEM)  # a rotation, pinned
    assert len(signing.trusted_keys(config_values=from_config, base_dir=tmp_path)) == 2
    monkeypatch.delenv("LEPTON_CI_PUBLIC_KEY")
    assert len(signing.trusted_keys(config_values=from_config, base_dir=tmp_path)) == 2  # unpinned: the config's
