"""lepton_ci/config.py: loading lepton.yml, and errors that name file:line and the key."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lepton_ci.config import SCHEMA_PATH, load_config, load_schema
from lepton_ci.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sklearn-digits" / "lepton.yml"


def write(tmp_path: Path, text: str, name: str = "lepton.yml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# --- valid configs ------------------------------------------------------------------------------------


def test_valid_config_loads_with_values_and_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("LEPTON_CI_REGISTRY", raising=False)
    path = write(tmp_path, """\
        version: 1
        model:
          name: digits
          file: model.joblib
        train:
          command: python train.py
          params: {C: 1.0}
          metrics: [metrics.json]
          artifacts: [model.joblib]
        gate:
          rules:
            - metric: eval.accuracy
              min: 0.9
              max_drop: 0.02
            - metric: eval.loss
              direction: lower
              max_drop_pct: 5
        """)
    cfg = load_config(path)
    assert cfg.model_name == "digits"
    assert cfg.framework == "sklearn"  # default
    assert cfg.model_file == "model.joblib"
    assert cfg.steps == ["train", "gate", "tag", "deploy", "report"]
    assert cfg.registry_url == "file://.lepton/registry"
    assert cfg.data["train"]["params"] == {"C": 1.0}
    assert cfg.data["gate"]["rules"][1] == {"metric": "eval.loss", "direction": "lower", "max_drop_pct": 5}
    assert cfg.path == path.resolve()
    assert cfg.run_path == tmp_path / ".lepton" / "run.json"
    # Lines are kept for later messages: the second rule starts on line 15.
    assert cfg.where("gate", "rules", 1) == "lepton.yml:15"
    assert cfg.where("train", "command") == "lepton.yml:6"


def test_minimal_config_is_just_a_model_name(tmp_path):
    cfg = load_config(write(tmp_path, "model:\n  name: m\n"))
    assert cfg.data == {"model": {"name": "m"}}


def test_registry_env_overrides_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_CI_REGISTRY", "file:///elsewhere")
    cfg = load_config(write(tmp_path, "model:\n  name: m\nregistry: file://reg\n"))
    assert cfg.registry_url == "file:///elsewhere"


def test_shipped_schema_is_a_valid_draft_2020_12_schema():
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)  # raises SchemaError if not
    assert load_schema() == schema


def test_example_config_validates():
    cfg = load_config(EXAMPLE)
    assert cfg.model_name == "digits"
    assert [r["metric"] for r in cfg.data["gate"]["rules"]] == ["eval.accuracy", "eval.f1_macro", "eval.log_loss"]


# --- unknown keys -----------------------------------------------------------------------------------


def test_unknown_nested_key_names_file_line_dotted_key_allowed_keys_and_suggestion(tmp_path):
    err = config_error(tmp_path, """\
        model:
          name: m
        gate:
          rules:
            - metric: a
              min: 1
              max_dorp: 2
        """)
    assert err.where == "lepton.yml:7"
    assert "'gate.rules[0].max_dorp'" in err.message
    assert "expected one of: direction, max, max_drop, max_drop_pct, metric, min, zero_baseline" in err.message
    assert "did you mean 'max_drop'?" in err.message
    assert str(err).startswith("lepton.yml:7: unknown key")


def test_unknown_top_level_key_suggests_the_close_one(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\nregistery: file://x\n")
    assert err.where == "lepton.yml:3"
    assert "unknown key 'registery'" in err.message
    assert "did you mean 'registry'?" in err.message
    for allowed in ("deploy", "gate", "model", "registry", "report", "steps", "tag", "train", "version"):
        assert allowed in err.message


def test_unknown_key_without_a_close_match_has_no_suggestion(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\n  qqqqqq: 1\n")
    assert err.where == "lepton.yml:3"
    assert "unknown key 'model.qqqqqq' (expected one of: file, framework, name)" in err.message
    assert "did you mean" not in err.message


def test_of_two_unknown_keys_the_first_by_line_is_reported(tmp_path):
    # The module promises "only the first problem (by line) is reported".
    err = config_error(tmp_path, "model:\n  name: m\nzzz: 1\naaa: 2\n")
    assert err.where == "lepton.yml:3"
    assert "'zzz'" in err.message


# --- types, required, enums, rules ------------------------------------------------------------------


@pytest.mark.parametrize("text, line, key, expected", [
    ("model:\n  name: m\ntrain:\n  command: x\n  timeout: soon\n", 5, "'train.timeout'", "must be a number, got a string 'soon'"),
    ("model:\n  name: m\ntag:\n  require_gate: 'yes'\n", 4, "'tag.require_gate'", "must be true or false"),
    ("model:\n  name: m\ngate:\n  rules:\n    metric: a\n", 4, "'gate.rules'", "must be a list, got a mapping"),
    ("model:\n", 1, "'model'", "must be a mapping, got empty"),
    ("model:\n  name: m\ndeploy:\n  port: '80'\n", 4, "'deploy.port'", "must be an integer"),
])
def test_wrong_type_names_key_and_expected_type(tmp_path, text, line, key, expected):
    err = config_error(tmp_path, text)
    assert err.where == f"lepton.yml:{line}"
    assert key in err.message
    assert expected in err.message


def test_missing_required_top_level_field(tmp_path):
    err = config_error(tmp_path, "version: 1\ntrain:\n  command: x\n")
    assert err.where == "lepton.yml:1"
    assert err.message == "the config is missing required key 'model'"


def test_missing_required_nested_field_points_at_its_mapping(tmp_path):
    err = config_error(tmp_path, "version: 1\nmodel:\n  framework: sklearn\n")
    assert err.where == "lepton.yml:2"
    assert err.message == "'model' is missing required key 'name'"


def test_missing_train_command(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\ntrain:\n  metrics: [m.json]\n")
    assert err.where == "lepton.yml:3"
    assert "'train' is missing required key 'command'" in err.message


def test_enum_violation_lists_allowed_values(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\n  framework: jax\n")
    assert err.where == "lepton.yml:3"
    assert err.message == "'model.framework' must be one of: sklearn, torch, keras; got 'jax'"


def test_enum_violation_in_a_list_item_has_the_item_line(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\nsteps:\n  - train\n  - bogus\n")
    assert err.where == "lepton.yml:5"
    assert "'steps[1]'" in err.message and "got 'bogus'" in err.message


def test_rule_direction_enum(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\ngate:\n  rules:\n    - metric: a\n      min: 0\n      direction: up\n")
    assert err.where == "lepton.yml:7"
    assert "'gate.rules[0].direction' must be one of: higher, lower" in err.message


def test_gate_rule_with_no_constraint(tmp_path):
    err = config_error(tmp_path, """\
        model:
          name: m
        gate:
          rules:
            - metric: a
              min: 1
            - metric: b
              direction: lower
        """)
    assert err.where == "lepton.yml:7"
    assert err.message == "'gate.rules[1]' needs at least one of min, max, max_drop, max_drop_pct"


def test_negative_max_drop_is_rejected(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\ngate:\n  rules:\n    - metric: a\n      max_drop: -1\n")
    assert err.where == "lepton.yml:6"
    assert "'gate.rules[0].max_drop' must be >= 0" in err.message


@pytest.mark.parametrize("text, line, key", [
    ("model:\n  name: My Model\n", 2, "'model.name'"),
    ("model:\n  name: m\ndeploy:\n  alias: Prod\n", 4, "'deploy.alias'"),
    ("model:\n  name: m\nregistry: s3://bucket\n", 3, "'registry'"),
])
def test_pattern_violations(tmp_path, text, line, key):
    err = config_error(tmp_path, text)
    assert err.where == f"lepton.yml:{line}"
    assert key in err.message and "must match" in err.message


def test_several_problems_report_the_first_by_line_and_count_the_rest(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\n  framework: jax\nfoo: 1\n")
    assert err.where == "lepton.yml:3"
    assert "'model.framework'" in err.message
    assert err.message.endswith("(and 1 more problem(s))")


# --- YAML-level problems ------------------------------------------------------------------------------


def test_duplicate_key_names_both_lines(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\ngate:\n  first_run: pass\n  first_run: fail\n")
    assert err.where == "lepton.yml:5"
    assert err.message == "duplicate key 'gate.first_run' (first at line 4)"


def test_duplicate_top_level_key(tmp_path):
    err = config_error(tmp_path, "model:\n  name: m\ntrain:\n  command: a\nmodel:\n  name: n\n")
    assert err.where == "lepton.yml:5"
    assert "duplicate key 'model' (first at line 1)" in err.message


@pytest.mark.parametrize("text, line", [
    ("model:\n  name: m\n   bad: x\n", 3),           # mapping value in the wrong place
    ("model:\n\tname: m\n", 2),                      # a tab for indentation
    ("model:\n  name: m\n---\nmodel:\n  name: n\n", 3),  # two documents
])
def test_malformed_yaml_reports_the_line(tmp_path, text, line):
    err = config_error(tmp_path, text)
    assert err.where == f"lepton.yml:{line}"
    assert err.message.startswith("not valid YAML: ")


def test_yaml_merge_key_is_supported_or_a_config_error(tmp_path):
    # `<<:` merge keys are common in CI YAML; they must never escape as a raw yaml traceback.
    path = write(tmp_path, "model:\n  <<: {name: m}\n")
    try:
        cfg = load_config(path)
    except ConfigError as err:
        assert err.where == "lepton.yml:2"
    else:
        assert cfg.data == {"model": {"name": "m"}}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file(tmp_path, text):
    err = config_error(tmp_path, text)
    assert err.where == "lepton.yml:1"
    assert err.message == "expected a mapping at the top level, got empty"


@pytest.mark.parametrize("text, described", [("- a\n- b\n", "a list"), ("hello\n", "a string 'hello'"), ("42\n", "an integer 42")])
def test_non_mapping_top_level(tmp_path, text, described):
    err = config_error(tmp_path, text)
    assert err.where == "lepton.yml:1"
    assert err.message == f"expected a mapping at the top level, got {described}"


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as info:
        load_config(tmp_path / "nope.yml")
    assert "config file not found" in str(info.value)
    assert "nope.yml" in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        load_config(tmp_path)


def test_not_utf8(tmp_path):
    p = tmp_path / "lepton.yml"
    p.write_bytes(b"model:\n  name: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.where == "lepton.yml:1"
    assert "UTF-8" in info.value.message


def test_error_names_the_file_it_was_loaded_from(tmp_path):
    p = write(tmp_path, "model:\n  name: m\n  framework: jax\n", name="custom.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.where == "custom.yaml:3"


# --- strict names, bounded YAML, env_passthrough ------------------------------------------------------


@pytest.mark.parametrize("text, line", [
    ("model:\n  name: |\n    digits\n", 2),  # a block scalar ends with a newline: "digits\n"
    ('model:\n  name: "digits\\n"\n', 2),
    ("model:\n  name: m\ntag:\n  aliases: [ok, \"prod\\n\"]\n", 4),
    ("model:\n  name: m\ndeploy:\n  alias: \"prod\\n\"\n", 4),
])
def test_names_with_a_trailing_newline_are_refused(tmp_path, text, line):
    err = config_error(tmp_path, text)
    assert err.where == f"lepton.yml:{line}"
    assert "\\n" in err.message  # the value is shown with its newline visible
    assert "(?!" not in err.message  # the schema's newline guard is not shown to users


def test_name_check_does_not_rely_on_the_schema_alone(tmp_path):
    # Even if a schema pattern let it through, the whole-string check in config.py refuses it.
    from lepton_ci.config import _check_names

    with pytest.raises(ConfigError, match="'model.name' must be lower-case letters"):
        _check_names({"model": {"name": "digits\n"}}, {("model", "name"): 2}, "lepton.yml")
    _check_names({"model": {"name": "a" * 128}, "tag": {"aliases": ["candidate"]}}, {}, "lepton.yml")


@pytest.mark.parametrize("name", ["a", "digits", "my-model_2.1", "0abc", "a" * 128])
def test_valid_names(tmp_path, name):
    assert load_config(write(tmp_path, f"model:\n  name: '{name}'\n")).model_name == name


def test_recursive_alias_in_config_is_a_config_error_with_line(tmp_path):
    err = config_error(tmp_path, "model: {name: m}\ntrain:\n  command: 'true'\n  params: &p\n    x: *p\n")
    assert err.where == "lepton.yml:4"
    assert "recursive alias" in err.message


def test_alias_bomb_in_config_is_a_config_error(tmp_path):
    bomb = "\n".join(["a: &a [1,1,1,1,1,1,1,1,1,1]"] + [
        f"{n}: &{n} [" + ",".join([f"*{p}"] * 10) + "]" for p, n in zip("abcdefgh", "bcdefghi")])
    err = config_error(tmp_path, "model: {name: m}\n" + bomb + "\n")
    assert err.where.startswith("lepton.yml:")
    assert "nodes" in err.message


def test_config_over_the_size_limit_is_refused(tmp_path):
    from lepton_ci.limits import CONFIG_MAX_BYTES

    path = write(tmp_path, "model: {name: m}\n# " + "x" * CONFIG_MAX_BYTES + "\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert info.value.where == "lepton.yml"
    assert "larger than the limit of 1 MiB" in info.value.message


def test_exponent_numbers_are_numbers_but_yaml11_booleans_stay(tmp_path):
    cfg = load_config(write(tmp_path, """\
        model: {name: m}
        train:
          command: x
          params: {lr: 1e-3}
        tag:
          require_gate: yes
        gate:
          rules:
            - metric: eval.loss
              direction: lower
              max_drop: 1e-3
        """))
    assert cfg.section("train")["params"] == {"lr": 0.001}
    assert cfg.section("tag")["require_gate"] is True
    assert cfg.section("gate")["rules"][0]["max_drop"] == 0.001


def test_merge_keys_in_config_earlier_mapping_wins(tmp_path):
    cfg = load_config(write(tmp_path, """\
        model: {name: m}
        train:
          command: x
          params:
            <<: [{lr: 0.1, depth: 3}, {lr: 0.5, seed: 1}]
            depth: 4
        """))
    assert cfg.section("train")["params"] == {"lr": 0.1, "depth": 4, "seed": 1}


def test_env_passthrough(tmp_path):
    cfg = load_config(write(tmp_path, "model: {name: m}\ntrain:\n  command: x\n  env_passthrough: [WANDB_API_KEY, _X1]\n"))
    assert cfg.section("train")["env_passthrough"] == ["WANDB_API_KEY", "_X1"]
    for bad, line in [("[1BAD]", 4), ("[A-B]", 4), ("WANDB_API_KEY", 4), ('["A\\n"]', 4)]:
        err = config_error(tmp_path, f"model: {{name: m}}\ntrain:\n  command: x\n  env_passthrough: {bad}\n")
        assert err.where == f"lepton.yml:{line}"
        assert "env_passthrough" in err.message


@pytest.mark.parametrize("text", [
    "model: {name: m}\nversion: !!int abc\n",
    "model: {name: m}\nversion: !!timestamp abc\n",
    "model: {name: m}\nversion: 1" + "0" * 5000 + "\n",
])
def test_bad_tagged_or_oversized_values_are_config_errors(tmp_path, text):
    err = config_error(tmp_path, text)
    assert err.where == "lepton.yml:2"
    assert err.message.startswith("bad value: ")
