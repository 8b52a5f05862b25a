"""Records and registry files are read strictly, and what is echoed back is bounded.

One group per root cause the CLI fuzz test (tests/integration/test_fuzz_cli.py) found: deep nesting in
registry files, gate and deployment records whose contents `report` trusted, lone surrogates that parsed
and then could not be written, numbers that overflow to an infinity, error lines that echoed a 10,000
character value, and a metric name in lepton.yml that split a failure line in two. Each must be one
`UserError` (or `RegistryError`) naming the file, never an exception nobody mapped to a message.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from lepton_ci.config import Config, load_config
from lepton_ci.errors import ConfigError, RegistryError, UserError
from lepton_ci.fsutil import (
    JsonEncodeError,
    JsonProblem,
    atomic_write_json,
    canonical_json,
    loads_strict,
    parse_json_strict,
    short_repr,
)
from lepton_ci.gate_rules import evaluate
from lepton_ci.metrics import parse_metrics
from lepton_ci.records import Deployment, GateRecord, RunRecord
from lepton_ci.registry.local import MARKER, LocalStorage
from lepton_ci.registry.shared import parse_history, parse_manifest, referenced_blobs
from lepton_ci.steps.report import build_context

DEEP_ARRAY = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000
LONG = "x" * 10_000


def gate_dict(**over: Any) -> dict[str, Any]:
    """A gate record as steps/gate.py writes it (results from the real gate_rules)."""
    results = evaluate([{"metric": "acc", "min": 0.5, "max_drop": 0.05}], {"acc": 0.9}, {"acc": 0.91}, "run.json")
    data: dict[str, Any] = {
        "schema_version": 1, "kind": "gate", "model": "toy",
        "candidate": {"run_id": "r1", "digest": "", "git": {"sha": "abc"}, "metrics": {"acc": 0.9}},
        "baseline": {"source": "registry", "ref": "production", "version": 1, "digest": "sha256:" + "0" * 64,
                     "metrics": {"acc": 0.91}},
        "results": results, "verdict": "pass", "created": "2026-01-01T00:00:00.000Z",
        "signature": {"alg": "none", "reason": "no signing key"},
    }
    data.update(over)
    return data


def deployment_dict(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 2, "kind": "deployment", "target": "local", "model": "toy", "version": 1,
        "digest": "sha256:" + "0" * 64, "endpoint": "http://127.0.0.1:9", "status": "healthy",
        "health": [{"check": "live", "passed": True, "ms": 3}], "previous": None, "image": "",
        "state": {"pid": 1, "start_ticks": 12345}, "created": "2026-01-01T00:00:00.000Z",
    }
    data.update(over)
    return data


# --- 1. nesting deeper than the parser goes is a message, in every registry file ---------------------------


@pytest.mark.parametrize("raw", [DEEP_ARRAY, DEEP_OBJECT])
def test_deep_json_in_a_version_manifest_is_a_registry_error(raw: bytes) -> None:
    with pytest.raises(RegistryError, match="version manifest is damaged.*nested too deeply"):
        parse_manifest(raw, "versions/1.json")
    assert referenced_blobs(raw) is None  # gc/check read it leniently: "too damaged to tell", not a crash


def test_deep_json_in_the_alias_history_is_a_registry_error() -> None:
    first = {"seq": 1, "alias": "production", "action": "move", "to": 1, "at": "2026-01-01T00:00:00Z"}
    data = json.dumps(first).encode() + b"\n" + DEEP_OBJECT + b"\n"
    with pytest.raises(RegistryError, match=r"history.jsonl:2: alias history is damaged \(not JSON: nested too deep"):
        parse_history(data, "history.jsonl")


def test_deep_json_in_the_registry_marker_is_a_registry_error(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_bytes(DEEP_ARRAY)
    with pytest.raises(RegistryError, match="is damaged .not JSON: nested too deeply"):
        LocalStorage(tmp_path)


def test_records_and_registry_files_share_one_strict_parser() -> None:
    assert loads_strict(b'{"a": [1, 2.5, "\\u00e9", "\\ud83d\\ude00"]}') == {"a": [1, 2.5, "é", "😀"]}
    assert loads_strict(b"\xef\xbb\xbf{}") == {}  # a BOM is tolerated, as json.loads(bytes) did
    for raw, why in [(DEEP_ARRAY, "nested too deeply"), (b"[NaN]", "NaN is not a JSON number"),
                     (b"[1e999]", "out of range"), (b'["\\udc00"]', "lone surrogate"),
                     (b'{"\\ud800": 1}', "lone surrogate"),
                     (b'["\xed\xa0\x80"]', "not UTF-8"), (b"\xff", "not UTF-8"), (b"{", "Expecting")]:
        with pytest.raises(JsonProblem, match=why):
            loads_strict(raw)
    with pytest.raises(UserError) as info:
        parse_json_strict(b"[1e999]", "run record", "run.json")
    assert info.value.where == "run.json"
    assert info.value.message.startswith("run record is not valid JSON: number 1e999")


# --- 2. gate.json: baseline metrics and results are checked on read; report reads optional fields safely -----


def test_gate_records_written_by_the_gate_validate() -> None:
    rules = [{"metric": "acc", "min": 0.5, "max": 2, "max_drop": 0.05}, {"metric": "loss", "max_drop_pct": 5},
             {"metric": "gone", "min": 0.1}, {"metric": "zero", "max_drop_pct": 1}]
    candidate = {"acc": 0.9, "loss": 0.2, "zero": 0.5}
    for baseline in ({"acc": 0.91, "zero": 0}, None):  # "no baseline value", "undefined", "no baseline (first run)"
        results = evaluate(rules, candidate, baseline, "run.json", "fail")
        base = {"source": "none", "ref": None, "metrics": baseline}
        rec = GateRecord.from_dict(gate_dict(results=results, baseline=base))
        assert len(rec.results) == len(results)


@pytest.mark.parametrize("metrics, needle", [
    ("aaaa", "baseline.metrics must be an object of names to numbers, got a string"),
    (-10**400, "baseline.metrics must be an object of names to numbers, got an integer"),
    ([[]], "baseline.metrics must be an object of names to numbers, got a list"),
    ({"acc": "v1"}, "baseline.metrics: metric 'acc' is a string, expected a number"),
    ({"acc": {}}, "baseline.metrics: metric 'acc' is an object"),
    ({"acc": [0.9]}, "baseline.metrics: metric 'acc' is a list"),
])
def test_gate_baseline_metrics_must_be_metrics(metrics: Any, needle: str) -> None:
    base = {"source": "registry", "ref": "production", "metrics": metrics}
    with pytest.raises(UserError) as info:
        GateRecord.from_dict(gate_dict(baseline=base), source="gate.json")
    assert needle in info.value.message and info.value.where == "gate.json"


@pytest.mark.parametrize("change, needle", [
    ({"observed": "0.9"}, "results[0].observed is a string, expected a number"),
    ({"observed": [0.9]}, "results[0].observed is a list"),
    ({"threshold": True}, "results[0].threshold is a boolean"),
    ({"passed": "yes"}, "results[0].passed must be a boolean, got a string"),
    ({"passed": None}, "results[0].passed must be a boolean, got null"),
    ({"metric": 3}, "results[0].metric must be a string"),
    ({"reason": {}}, "results[0].reason must be a string, got an object"),
    ({"delta": 10**400}, "results[0].delta is an integer too large for a float"),
    ({"direction": 1}, "results[0].direction must be a string"),
])
def test_gate_result_fields_have_their_types(change: dict[str, Any], needle: str) -> None:
    data = gate_dict()
    data["results"][0].update(change)
    with pytest.raises(UserError) as info:
        GateRecord.from_dict(data, source="gate.json")
    assert needle in info.value.message


@pytest.mark.parametrize("key", ["passed", "threshold", "metric", "reason", "rule"])
def test_a_gate_result_lacking_a_required_key_is_refused(key: str) -> None:
    data = gate_dict()
    del data["results"][1][key]
    with pytest.raises(UserError, match=rf"results\[1\] lacks '{key}'"):
        GateRecord.from_dict(data, source="gate.json")


def test_a_gate_result_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(UserError, match=r"results\[0\] must be an object, got an integer"):
        GateRecord.from_dict(gate_dict(results=[3]))


def test_report_context_ignores_optional_fields_of_the_wrong_type() -> None:
    data = gate_dict()
    data["candidate"]["git"] = "not an object"
    data["candidate"]["run_id"] = ["r1"]
    for r in data["results"]:
        r.pop("observed")  # optional: shown as "—"
    gate = GateRecord.from_dict(data)
    context = build_context(None, gate, None, None, "toy", 4, [])
    assert context["candidate"] == {"run_id": None, "git_sha": "", "git_ref": None, "dirty": False}
    assert {r["observed"] for r in context["results"]} == {"—"}
    run = RunRecord.from_dict({"schema_version": 1, "kind": "run", "run_id": "r1", "git": {"sha": 123, "ref": []},
                               "metrics": {"acc": 0.9}, "exit": {"status": "succeeded"}})
    context = build_context(run, None, None, None, "toy", 4, [])
    assert context["candidate"]["git_sha"] == "" and context["candidate"]["git_ref"] is None


# --- 3. deployment.json: health entries are objects, previous an object or null ----------------------------


@pytest.mark.parametrize("health", [[99], [[0.9]], ["live"], [None]])
def test_deployment_health_entries_must_be_objects(health: list[Any]) -> None:
    with pytest.raises(UserError, match=r"'health'\[0\] must be an object") as info:
        Deployment.from_dict(deployment_dict(health=health), source="deployment.json")
    assert info.value.where == "deployment.json"


@pytest.mark.parametrize("previous", [[1], 3, "v1"])
def test_deployment_previous_must_be_an_object_or_null(previous: Any) -> None:
    with pytest.raises(UserError, match="field 'previous' must be an object"):
        Deployment.from_dict(deployment_dict(previous=previous))
    assert Deployment.from_dict(deployment_dict(previous={"version": 1})).previous == {"version": 1}


def test_report_context_of_a_valid_deployment() -> None:
    gate = GateRecord.from_dict(gate_dict())
    dep = Deployment.from_dict(deployment_dict(previous={"version": 1}))
    context = build_context(None, gate, None, dep, "toy", 4, [])
    assert context["deployment"]["checks"] == [{"check": "live", "passed": True, "ms": 3}]


# --- 4. lone surrogates are refused where they are read, and never end as UnicodeEncodeError -----------------


def test_a_lone_surrogate_escape_in_a_record_is_refused_on_read(tmp_path: Path) -> None:
    p = tmp_path / "deployment.json"
    text = json.dumps(deployment_dict(state={"pid": 1, "start_ticks": "\ud800"}))  # ensure_ascii: "\\ud800"
    assert "\\ud800" in text
    p.write_text(text)
    with pytest.raises(UserError, match="lone surrogate") as info:
        Deployment.read(p)
    assert info.value.where == str(p)


def test_encoded_surrogate_bytes_in_a_record_are_refused_on_read(tmp_path: Path) -> None:
    p = tmp_path / "run.json"
    p.write_bytes(b'{"kind": "run", "schema_version": 1, "run_id": "\xed\xa0\x80"}')
    with pytest.raises(UserError, match="not UTF-8"):
        RunRecord.read(p)


@pytest.mark.parametrize("key", ["at", "reason", "actor"])
def test_a_lone_surrogate_in_the_alias_history_is_damage(key: str) -> None:
    event = {"seq": 1, "alias": "production", "action": "move", "to": 1, "at": "2026-01-01T00:00:00Z", key: "\ud800"}
    with pytest.raises(RegistryError, match="history.jsonl:1: alias history is damaged.*lone surrogate"):
        parse_history(json.dumps(event).encode() + b"\n", "history.jsonl")


@pytest.mark.parametrize("name, content", [
    ("metrics.json", b'{"acc": 0.9, "\\ud800": 1}'),
    ("metrics.json", b'{"a": {"\\udfff": 1}}'),
])
def test_a_lone_surrogate_in_a_metric_name_is_refused(name: str, content: bytes) -> None:
    with pytest.raises(UserError, match="is not Unicode text") as info:
        parse_metrics(content, f"HEAD:{name}", name)
    assert info.value.where == f"HEAD:{name}"


@pytest.mark.parametrize("name, content", [
    ("metrics.json", b'{"acc": 0.9, "\xed\xa0\x80": 1}'),
    ("metrics.yaml", b"acc: 0.9\n\xed\xa0\x80: 1\n"),
    ("metrics.yaml", b'acc: 0.9\n"\\ud800": 1\n'),  # PyYAML refuses the escape itself
    ("metrics.toml", b'acc = 0.9\n"\xed\xa0\x80" = 1\n'),
    ("metrics.toml", b'acc = 0.9\n"\\ud800" = 1\n'),
])
def test_surrogates_in_a_metrics_file_are_refused(name: str, content: bytes) -> None:
    with pytest.raises(UserError) as info:
        parse_metrics(content, name, name)
    assert info.value.where == name


def test_strings_that_are_not_unicode_are_a_user_error_when_written(tmp_path: Path) -> None:
    with pytest.raises(JsonEncodeError, match="lone surrogate"):
        canonical_json({"at": "\ud800"})
    with pytest.raises(ValueError):  # callers that map json's ValueErrors keep working
        canonical_json(["\udcff"])
    target = tmp_path / "deployment.json"
    with pytest.raises(UserError, match="cannot write JSON: a string holds a lone surrogate") as info:
        atomic_write_json(target, {"state": {"start_ticks": "\ud800"}})
    assert info.value.where == str(target) and not target.exists()


# --- 5. numbers that overflow to an infinity are refused on read --------------------------------------------


@pytest.mark.parametrize("token", ["-1e999", "1e999", "1E400"])
def test_a_number_that_overflows_to_infinity_is_refused_in_a_record(tmp_path: Path, token: str) -> None:
    p = tmp_path / "run.json"
    p.write_text('{"kind": "run", "schema_version": 1, "run_id": "r1", "params": {"lr": ' + token + "}}")
    with pytest.raises(UserError, match="out of range") as info:
        RunRecord.read(p)
    assert info.value.where == str(p)


def test_a_non_finite_float_is_a_user_error_naming_the_file_when_written(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot write JSON: Out of range float") as info:
        atomic_write_json(tmp_path / "gate.json", {"baseline": {"metrics": {"acc": float("-inf")}}})
    assert info.value.where == str(tmp_path / "gate.json")


# --- 6. echoed values are bounded --------------------------------------------------------------------------


def test_short_repr_is_bounded_and_one_line() -> None:
    assert short_repr("toy") == "'toy'"
    assert short_repr(3) == "3" and short_repr(None) == "None"
    for value in [LONG, "\n" * 10_000, "\U000e0000" * 1000, [LONG] * 1000, {"a": [[[[[LONG]]]]]}, 10**4000]:
        text = short_repr(value)
        assert len(text) <= 120 and "\n" not in text, text
    assert short_repr(LONG).endswith("…' (10000 chars)")


def test_alias_history_errors_do_not_echo_a_long_value() -> None:
    event = {"seq": 1, "alias": "production", "action": "move", "to": LONG, "at": "2026-01-01T00:00:00Z"}
    with pytest.raises(RegistryError) as info:
        parse_history(json.dumps(event).encode(), "history.jsonl")
    assert "alias history is damaged ('to' is 'xxx" in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize("marker", [{"kind": LONG}, {"kind": "lepton-registry", "schema_version": LONG}])
def test_registry_marker_errors_do_not_echo_a_long_value(tmp_path: Path, marker: dict[str, Any]) -> None:
    (tmp_path / MARKER).write_text(json.dumps(marker))
    with pytest.raises(RegistryError) as info:
        LocalStorage(tmp_path)
    assert len(str(info.value)) < 300 + len(str(tmp_path)) * 2


@pytest.mark.parametrize("text", [
    f"model:\n  name: '{LONG}'\n",                      # pattern: `got {instance!r}`
    f"model:\n  name: toy\n  framework: '{LONG}'\n",    # enum
    f"model:\n  name: toy\n  file: [{LONG}]\n",          # type: _describe
    f"model:\n  name: toy\n{LONG}: 1\n",                 # unknown key
    f"model:\n  name: toy\ngate:\n  rules:\n    - metric: acc\n      min: '{LONG}'\n",
    f"model:\n  name: toy\ntrain:\n  command: x\n  env:\n    {LONG}: [1]\n",  # a long key in the path
])
def test_config_errors_do_not_echo_a_long_value(tmp_path: Path, text: str) -> None:
    p = tmp_path / "lepton.yml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert len(str(info.value)) < 600, str(info.value)[:700]


def test_gate_does_not_echo_a_long_model_name(tmp_path: Path) -> None:
    from lepton_ci.steps.gate import gate

    run = tmp_path / "run.json"
    run.write_text(json.dumps({"kind": "run", "schema_version": 1, "run_id": "r1", "model": LONG,
                               "exit": {"status": "succeeded"}}))
    config = Config(path=tmp_path / "lepton.yml", data={"model": {"name": "toy"}})
    with pytest.raises(UserError, match="is a run of model 'xxx") as info:
        gate(config, run_path=run)
    assert len(str(info.value)) < 300 + len(str(run))


# --- 7. names in lepton.yml hold no control characters or line separators ------------------------------------


def rules_config(metric: str) -> str:
    return textwrap.dedent("""\
        model:
          name: toy
        gate:
          rules:
            - metric: acc
              min: 0.5
            - metric: {metric}
              min: 0.5
        """).format(metric=json.dumps(metric))


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\t", "\x1b", "\x7f", "\n"])
def test_a_gate_rule_metric_with_a_line_breaking_character_is_refused(tmp_path: Path, char: str) -> None:
    p = tmp_path / "lepton.yml"
    p.write_text(rules_config(f"eval{char}acc"))
    with pytest.raises(ConfigError, match="'gate.rules\\[1\\].metric' must not contain control characters") as info:
        load_config(p)
    assert info.value.where == "lepton.yml:7"
    assert "\n" not in str(info.value) and "\u2028" not in str(info.value)


def test_other_name_like_strings_are_checked_and_plain_unicode_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "lepton.yml"
    p.write_text(rules_config("précision@5 (top-k)"))
    assert load_config(p).data["gate"]["rules"][1]["metric"] == "précision@5 (top-k)"
    p.write_text('model:\n  name: toy\ntrain:\n  command: "a\\nb"\n  metrics: ["m.json", "x\\u2028.json"]\n')
    with pytest.raises(ConfigError, match=r"'train.metrics\[1\]' must not contain") as info:
        load_config(p)
    assert info.value.where == "lepton.yml:5"


# --- and: a metrics file cannot expand to an unbounded number of metrics -----------------------------------


def test_a_metrics_file_with_too_many_metrics_is_refused() -> None:
    from lepton_ci.limits import METRICS_MAX_COUNT

    ok = json.dumps({f"m{i}": i for i in range(METRICS_MAX_COUNT)}).encode()
    assert len(parse_metrics(ok, "metrics.json").values) == METRICS_MAX_COUNT
    too_many = json.dumps({"a": list(range(METRICS_MAX_COUNT + 1))}).encode()
    with pytest.raises(UserError, match="holds more than 100,000 metrics") as info:
        parse_metrics(too_many, "metrics.json")
    assert info.value.where == "metrics.json"
    aliases = "a: &a [" + ",".join(["1"] * 400) + "]\nb: [" + ",".join(["*a"] * 400) + "]\n"  # 160,400 values
    with pytest.raises(UserError, match="holds more than 100,000 metrics"):
        parse_metrics(aliases, "metrics.yaml")
