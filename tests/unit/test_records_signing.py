"""lepton_ci/records.py and lepton_ci/signing.py: JSON round trips, version checks, HMAC over gate records."""

from __future__ import annotations

import json

import pytest

from lepton_ci import signing
from lepton_ci.errors import UserError
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


def test_signing_key_comes_from_the_environment(signing_key):
    assert signing.signing_key() == signing_key


def test_sign_and_verify(signing_key):
    rec = signing.sign(make_gate(), signing.signing_key())
    assert rec.signature["alg"] == "hmac-sha256"
    assert rec.signature["key_id"] == signing.key_id(signing_key)
    assert signing_key.decode() not in json.dumps(rec.to_dict())
    assert signing.verify(rec, signing_key) == (True, "signature verified")


def test_signature_survives_a_file_round_trip(tmp_path, signing_key):
    rec = signing.sign(make_gate(extra={"future_field": {"x": 1}}), signing_key)
    p = rec.write(tmp_path / "gate.json")
    back = GateRecord.read(p)
    assert signing.verify(back, signing_key) == (True, "signature verified")


@pytest.mark.parametrize("tamper", [
    lambda r: setattr(r, "verdict", "fail"),
    lambda r: r.candidate["metrics"].__setitem__("eval.accuracy", 0.99),
    lambda r: r.candidate.__setitem__("digest", "sha256:" + "b" * 64),
    lambda r: r.baseline.__setitem__("version", 4),
    lambda r: r.results[0].__setitem__("passed", False),
    lambda r: setattr(r, "model", "other"),
    lambda r: setattr(r, "created", "2030-01-01T00:00:00.000Z"),
    lambda r: r.extra.__setitem__("injected", True),
])
def test_tampering_with_any_field_breaks_verification(signing_key, tamper):
    rec = signing.sign(make_gate(), signing_key)
    tamper(rec)
    ok, reason = signing.verify(rec, signing_key)
    assert ok is False
    assert "changed after it was signed" in reason


def test_tampering_in_the_file_breaks_verification(tmp_path, signing_key):
    rec = signing.sign(make_gate(verdict="fail"), signing_key)
    p = rec.write(tmp_path / "gate.json")
    data = json.loads(p.read_text())
    data["verdict"] = "pass"
    p.write_text(json.dumps(data))
    ok, reason = signing.verify(GateRecord.read(p), signing_key)
    assert not ok and "changed" in reason


def test_wrong_key_says_another_key(signing_key):
    rec = signing.sign(make_gate(), b"a different key")
    ok, reason = signing.verify(rec, signing_key)
    assert ok is False
    assert "another key" in reason
    assert signing.key_id(b"a different key") in reason
    assert "a different key" not in reason


def test_forged_key_id_still_fails(signing_key):
    rec = signing.sign(make_gate(), b"attacker key")
    rec.signature["key_id"] = signing.key_id(signing_key)
    ok, reason = signing.verify(rec, signing_key)
    assert ok is False and "does not match" in reason


def test_no_key_writes_an_unsigned_record(no_signing_key):
    assert signing.signing_key() is None
    rec = signing.sign(make_gate(), signing.signing_key())
    assert rec.signature["alg"] == "none"
    assert "LEPTON_CI_SIGNING_KEY" in rec.signature["reason"]
    assert "value" not in rec.signature
    ok, reason = signing.verify(rec, b"any key")
    assert ok is False and "unsigned" in reason
    ok, reason = signing.verify(rec, None)
    assert ok is False and "unsigned" in reason


def test_signed_record_checked_without_a_key(signing_key):
    rec = signing.sign(make_gate(), signing_key)
    ok, reason = signing.verify(rec, None)
    assert ok is False
    assert "LEPTON_CI_SIGNING_KEY is not set" in reason


def test_empty_key_counts_as_no_key(monkeypatch):
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY", "")
    assert signing.signing_key() is None


def test_signature_is_excluded_from_payload_and_payload_is_canonical(signing_key):
    a = make_gate()
    b = make_gate()
    b.signature = {"alg": "hmac-sha256", "value": "x"}
    assert a.signed_payload() == b.signed_payload()
    payload = json.loads(a.signed_payload())
    assert "signature" not in payload and payload["verdict"] == "pass"
    assert signing.sign(make_gate(), signing_key).signature == signing.sign(make_gate(), signing_key).signature
