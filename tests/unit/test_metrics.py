"""lepton_ci/metrics.py and lepton_ci/metrics_diff.py: parse, flatten, diff, format, diff across git revisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lepton_ci.errors import UserError
from lepton_ci.metrics import (
    MetricChange,
    ParsedMetrics,
    diff_metrics,
    flatten,
    fmt_number,
    format_markdown,
    format_table,
    load_metrics_file,
    parse_metrics,
)
from lepton_ci.metrics_diff import diff_revisions

# --- flatten ----------------------------------------------------------------------------------------


def test_flatten_nested_mappings_use_dots():
    assert flatten({"eval": {"accuracy": 0.93, "loss": {"train": 1, "test": 2.5}}, "epochs": 3}) == {
        "eval.accuracy": 0.93, "eval.loss.train": 1, "eval.loss.test": 2.5, "epochs": 3,
    }


def test_flatten_lists_are_indexed():
    assert flatten({"per_class": [0.9, {"f1": 0.8}], "top": [[1, 2]]}) == {
        "per_class.0": 0.9, "per_class.1.f1": 0.8, "top.0.0": 1, "top.0.1": 2,
    }


def test_flatten_ignores_bools_strings_and_nulls():
    flat = flatten({"ok": True, "bad": False, "name": "resnet", "none": None, "n": 0, "x": {"flag": True}})
    assert flat == {"n": 0}
    assert not any(isinstance(v, bool) for v in flat.values())


def test_flatten_keys_are_strings():
    assert flatten({1: {2: 3.0}}) == {"1.2": 3.0}


# --- parsing ---------------------------------------------------------------------------------------


DOC = {"eval": {"accuracy": 0.93, "f1": 0.9}, "epochs": 3, "note": "x", "best": True}
EXPECTED = {"eval.accuracy": 0.93, "eval.f1": 0.9, "epochs": 3}


@pytest.mark.parametrize("name, text", [
    ("metrics.json", json.dumps(DOC)),
    ("metrics.yaml", "eval:\n  accuracy: 0.93\n  f1: 0.9\nepochs: 3\nnote: x\nbest: true\n"),
    ("metrics.yml", "{eval: {accuracy: 0.93, f1: 0.9}, epochs: 3, note: x, best: yes}\n"),
    ("metrics.toml", 'epochs = 3\nnote = "x"\nbest = true\n[eval]\naccuracy = 0.93\nf1 = 0.9\n'),
    ("METRICS.JSON", json.dumps(DOC)),
])
def test_parse_each_format(name, text):
    assert parse_metrics(text, name) == ParsedMetrics(EXPECTED, ())
    assert parse_metrics(text.encode(), name).values == EXPECTED  # bytes from git work too


def test_format_comes_from_filename_not_source_label():
    assert parse_metrics('{"a": 1}', "HEAD:metrics.json (label)", "metrics.json").values == {"a": 1}


def test_load_metrics_file(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("[eval]\nloss = 0.25\n")
    assert load_metrics_file(p).values == {"eval.loss": 0.25}


def test_load_missing_metrics_file_names_it(tmp_path):
    with pytest.raises(UserError) as info:
        load_metrics_file(tmp_path / "gone.json")
    assert "gone.json" in str(info.value)
    assert "not found" in info.value.message


@pytest.mark.parametrize("name, text, kind", [
    ("bad.json", '{"a": 1,}', "JSON"),
    ("bad.json", "", "JSON"),
    ("bad.yaml", "a: [1\n", "YAML"),
    ("bad.yml", "a: 1\n b: 2\n", "YAML"),
    ("bad.yaml", "a: !!python/object:os.system x\n", "YAML"),
    ("bad.toml", "a = \n", "TOML"),
    ("bad.toml", "[a\n", "TOML"),
])
def test_malformed_file_is_a_user_error_naming_the_file(tmp_path, name, text, kind):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(UserError) as info:
        load_metrics_file(p)
    assert info.value.where == str(p)
    assert info.value.message.startswith(f"malformed {kind} metrics: ")


def test_not_utf8_is_a_user_error(tmp_path):
    p = tmp_path / "m.toml"
    p.write_bytes(b"a = \xff\xfe\n")
    with pytest.raises(UserError) as info:
        load_metrics_file(p, display="metrics/m.toml")
    assert info.value.where == "metrics/m.toml"


@pytest.mark.parametrize("name, text", [("m.json", "[1, 2]"), ("m.yaml", "- 1\n"), ("m.yaml", "0.5\n"), ("m.yaml", "")])
def test_top_level_must_be_a_mapping(name, text):
    with pytest.raises(UserError) as info:
        parse_metrics(text, name)
    assert info.value.where == name
    assert "mapping" in info.value.message


@pytest.mark.parametrize("name, text, key, shown", [
    ("m.json", '{"eval": {"loss": NaN, "acc": 0.9}, "n": 3}', "eval.loss", "nan"),
    ("m.json", '{"a": Infinity, "eval": {"acc": 0.9}, "n": 3}', "a", "inf"),
    ("m.json", '{"a": -Infinity, "eval": {"acc": 0.9}, "n": 3}', "a", "-inf"),
    ("m.json", '{"a": 1e400, "eval": {"acc": 0.9}, "n": 3}', "a", "inf"),  # overflows to inf
    ("m.json", '{"a": 1%s, "eval": {"acc": 0.9}, "n": 3}' % ("0" * 400), "a", "401 digits"),  # too large for a float
    ("m.yaml", "eval:\n  loss: .nan\n  acc: 0.9\nn: 3\n", "eval.loss", "nan"),
    ("m.yml", "a: -.inf\neval: {acc: 0.9}\nn: 3\n", "a", "-inf"),
    ("m.yaml", "a: 1%s\neval: {acc: 0.9}\nn: 3\n" % ("0" * 400), "a", "401 digits"),
    ("m.toml", "n = 3\n[eval]\nloss = nan\nacc = 0.9\n", "eval.loss", "nan"),
    ("m.toml", "a = inf\nn = 3\n[eval]\nacc = 0.9\n", "a", "inf"),
])
def test_non_finite_value_is_skipped_with_a_note_and_the_rest_counts(name, text, key, shown):
    parsed = parse_metrics(text, name)
    assert parsed.values == {"eval.acc": 0.9, "n": 3}
    [note] = parsed.notes
    assert note.startswith(f"{name}: metric {key!r} ")
    assert shown in note and "skipped" in note and "finite" in note


def test_huge_integer_never_overflows_later():
    big = parse_metrics('{"a": %s, "b": 2}' % (10 ** 400), "m.json")
    d = diff_metrics("A", {"m.json": big.values}, "B", {"m.json": {"a": 1.5, "b": 2}})
    assert [(c.metric, c.old, c.new) for c in d.changes] == [("a", None, 1.5), ("b", 2, 2)]
    format_table(d, show_all=True)  # no OverflowError on the way out either


def test_dotted_key_colliding_with_nested_key_is_noted():
    parsed = parse_metrics('{"a.b": 1, "a": {"b": 2}, "c": 3}', "m.json")
    assert parsed.values == {"a.b": 2, "c": 3}
    assert parsed.notes == ("m.json: metric 'a.b' is given twice (a dotted key and a nested one); the later value is used",)


# --- YAML 1.2, as DVC reads metrics ------------------------------------------------------------------


def test_yaml_exponent_floats_are_metrics():
    parsed = parse_metrics("lr: 1e-3\nbig: 1e15\navogadro: 6.02e23\nsigned: +1.5E+2\nplain: 2.5\n", "m.yaml")
    assert parsed.values == {"lr": 0.001, "big": 1e15, "avogadro": 6.02e23, "signed": 150.0, "plain": 2.5}


def test_yaml_yes_no_on_off_are_strings_so_keys_do_not_collide():
    text = "on: {acc: 0.1}\noff: {acc: 0.2}\nyes: 3\nno: 4\ny: 5\nn: 6\nflag: on\n"
    assert parse_metrics(text, "m.yaml").values == {
        "on.acc": 0.1, "off.acc": 0.2, "yes": 3, "no": 4, "y": 5, "n": 6,
    }


def test_yaml_octal_hex_and_leading_zero_follow_yaml_1_2():
    assert parse_metrics("o: 0o17\nd: 017\nh: 0x1F\nu: 1_000\n", "m.yaml").values == {"o": 15, "d": 17, "h": 31, "u": 1000}


def test_yaml_merge_keys_earlier_mapping_wins_and_own_keys_win():
    # Multi-letter keys: PyYAML 6.0.4 got this right only for keys that Python happens to intern.
    text = ("base: &a {lr: 0.1, depth: 1}\nalt: &b {lr: 0.2, seed: 2}\nrun:\n  <<: [*a, *b]\n  epochs: 0\n  depth: 9\n"
            "inline:\n  <<: [{lr: 0.3, depth: 3}, {lr: 0.4, seed: 4}]\n")
    values = parse_metrics(text, "m.yaml").values
    assert {k: v for k, v in values.items() if k.startswith("run.")} == {
        "run.lr": 0.1, "run.depth": 9, "run.seed": 2, "run.epochs": 0}
    assert {k: v for k, v in values.items() if k.startswith("inline.")} == {
        "inline.lr": 0.3, "inline.depth": 3, "inline.seed": 4}


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n"])
def test_recursive_yaml_alias_is_a_user_error(text):
    with pytest.raises(UserError) as info:
        parse_metrics(text, "m.yaml")
    assert info.value.where == "m.yaml"
    assert "recursive alias" in info.value.message


def test_metrics_file_over_the_size_limit_is_refused(tmp_path):
    from lepton_ci.limits import METRICS_MAX_BYTES

    p = tmp_path / "m.json"
    with open(p, "wb") as f:
        f.write(b'{"a": 1, "pad": "')
        f.truncate(METRICS_MAX_BYTES + 10)
    with pytest.raises(UserError) as info:
        load_metrics_file(p, display="m.json")
    assert info.value.where == "m.json"
    assert "larger than the limit of 16 MiB" in info.value.message


@pytest.mark.parametrize("name", ["metrics.csv", "metrics.txt", "metrics"])
def test_unsupported_extension(name):
    with pytest.raises(UserError) as info:
        parse_metrics('{"a": 1}', name)
    assert info.value.where == name
    assert "unsupported metrics file type" in info.value.message
    assert ".json" in info.value.message and ".toml" in info.value.message


# --- diff ------------------------------------------------------------------------------------------


def test_change_old_new_diff_pct():
    c = MetricChange("m.json", "acc", 0.8, 0.9)
    assert c.diff == pytest.approx(0.1)
    assert c.pct == pytest.approx(12.5)
    assert c.changed


def test_pct_is_relative_to_abs_old():
    c = MetricChange("m.json", "margin", -2.0, -1.0)
    assert c.diff == 1.0
    assert c.pct == pytest.approx(50.0)  # improvement from -2 to -1 is +50%, not -50%
    assert MetricChange("m.json", "margin", -2.0, -3.0).pct == pytest.approx(-50.0)


def test_pct_with_old_zero_is_none():
    c = MetricChange("m.json", "errors", 0, 5)
    assert c.diff == 5
    assert c.pct is None


def test_missing_side_has_no_diff():
    assert MetricChange("m.json", "a", None, 1.0).diff is None
    assert MetricChange("m.json", "a", None, 1.0).pct is None
    assert MetricChange("m.json", "a", 1.0, None).changed


def test_diff_metrics_compares_per_file_and_sorts():
    d = diff_metrics(
        "A", {"b.json": {"z": 1, "y": 2}, "a.json": {"x": 1.0}},
        "B", {"b.json": {"z": 1, "y": 3}, "a.json": None, "c.json": {"w": 4}},
        notes=["a.json: missing at B"],
    )
    rows = [(c.path, c.metric, c.old, c.new) for c in d.changes]
    assert rows == [
        ("a.json", "x", 1.0, None),
        ("b.json", "y", 2, 3),
        ("b.json", "z", 1, 1),
        ("c.json", "w", None, 4),
    ]
    assert [c.metric for c in d.visible(show_all=False)] == ["x", "y", "w"]
    assert len(d.visible(show_all=True)) == 4
    assert d.notes == ["a.json: missing at B"]


def test_int_and_equal_float_are_unchanged():
    d = diff_metrics("A", {"m.json": {"n": 3}}, "B", {"m.json": {"n": 3.0}})
    assert d.visible(show_all=False) == []


# --- formatting -------------------------------------------------------------------------------------


def _sample():
    return diff_metrics(
        "main", {"m.json": {"acc": 0.8, "loss": 0.5, "same": 1.0, "gone": 2.0}},
        "HEAD", {"m.json": {"acc": 0.9, "loss": 0.6666666, "same": 1.0, "new": 7}},
        notes=["x.json: missing at main"],
    )


def test_json_changed_only_and_all():
    d = _sample()
    out = d.to_json()
    assert out["a"] == "main" and out["b"] == "HEAD"
    assert set(out["files"]["m.json"]) == {"acc", "loss", "gone", "new"}
    assert out["files"]["m.json"]["acc"]["old"] == 0.8
    assert out["files"]["m.json"]["acc"]["new"] == 0.9
    assert out["files"]["m.json"]["acc"]["diff"] == pytest.approx(0.1)
    assert out["files"]["m.json"]["acc"]["pct"] == pytest.approx(12.5)
    assert out["files"]["m.json"]["gone"] == {"old": 2.0, "new": None, "diff": None, "pct": None}
    assert out["notes"] == ["x.json: missing at main"]
    assert "same" in d.to_json(show_all=True)["files"]["m.json"]
    json.dumps(out, allow_nan=False)  # serialisable as strict JSON


def test_json_precision_rounds_diff_and_pct_not_values():
    out = _sample().to_json(precision=3)
    loss = out["files"]["m.json"]["loss"]
    assert loss["new"] == 0.6666666
    assert loss["diff"] == 0.167
    assert loss["pct"] == 33.333


def test_table_changed_only():
    text = format_table(_sample())
    lines = text.splitlines()
    assert lines[0].split() == ["Path", "Metric", "main", "HEAD", "Change", "Change", "%"]
    body = {line.split()[1]: line.split() for line in lines[1:] if not line.startswith("note:")}
    assert set(body) == {"acc", "loss", "gone", "new"}
    assert body["acc"][2:] == ["0.8", "0.9", "+0.1", "+12.50%"]
    assert body["gone"][2:] == ["2", "—", "—", "—"]
    assert body["new"][2:] == ["—", "7", "—", "—"]
    assert lines[-1] == "note: x.json: missing at main"
    # Columns line up: every row starts its "Metric" column at the same offset.
    offsets = {line.index(line.split()[1], len("m.json")) for line in lines[1:-1]}
    assert offsets == {lines[0].index("Metric")}


def test_table_all_and_precision():
    text = format_table(_sample(), show_all=True, precision=2)
    assert any(line.split()[1] == "same" for line in text.splitlines()[1:-1])
    loss = next(line for line in text.splitlines() if line.split()[1:2] == ["loss"]).split()
    assert loss[2:] == ["0.5", "0.67", "+0.17", "+33.33%"]


def test_table_when_nothing_changed():
    d = diff_metrics("A", {"m.json": {"a": 1}}, "B", {"m.json": {"a": 1}})
    assert format_table(d) == "No metric changed."
    assert format_markdown(d) == "_No metric changed._"
    empty = diff_metrics("A", {}, "B", {})
    assert format_table(empty, show_all=True) == "No metrics found."


def test_markdown():
    text = format_markdown(_sample(), precision=4)
    lines = text.splitlines()
    assert lines[0] == "| Path | Metric | `main` | `HEAD` | Change | Change % |"
    assert lines[1] == "|---|---|---:|---:|---:|---:|"
    assert "| m.json | acc | 0.8 | 0.9 | +0.1 | +12.50% |" in lines
    assert "| m.json | loss | 0.5 | 0.6667 | +0.1667 | +33.33% |" in lines
    assert not any("| same |" in line for line in lines)
    assert lines[-1] == "> x.json: missing at main"
    assert any("| same |" in line for line in format_markdown(_sample(), show_all=True).splitlines())


def test_markdown_escapes_pipes():
    d = diff_metrics("A", {"m.json": {"a|b": 1}}, "B", {"m.json": {"a|b": 2}})
    assert "| m.json | a\\|b | 1 | 2 | +1 | +100.00% |" in format_markdown(d)


def test_negative_change_and_pct_signs():
    d = diff_metrics("A", {"m.json": {"acc": 0.9}}, "B", {"m.json": {"acc": 0.45}})
    assert "| m.json | acc | 0.9 | 0.45 | -0.45 | -50.00% |" in format_markdown(d)


def test_change_with_zero_old_shows_dash_for_pct():
    d = diff_metrics("A", {"m.json": {"errors": 0}}, "B", {"m.json": {"errors": 4}})
    assert "| m.json | errors | 0 | 4 | +4 | — |" in format_markdown(d)


@pytest.mark.parametrize("x, precision, text", [
    (None, 4, "—"), (3, 4, "3"), (2.0, 4, "2"), (0.123456789, 5, "0.12346"),
    (-0.0, 3, "0"), (0.00001, 3, "1e-05"), (0.5, 0, "0.5"),
])
def test_fmt_number(x, precision, text):
    assert fmt_number(x, precision) == text


# --- diff across git revisions ----------------------------------------------------------------------


def _metrics(**kw) -> str:
    return json.dumps({"eval": kw})


def test_head_1_vs_head(git_repo):
    git_repo.commit({"metrics.json": _metrics(acc=0.5, loss=1.0)}, "one")
    git_repo.commit({"metrics.json": _metrics(acc=0.75, loss=1.0)}, "two")
    d = diff_revisions("HEAD~1", "HEAD", ["metrics.json"], git_repo.path)
    assert (d.a, d.b) == ("HEAD~1", "HEAD")
    by = {c.metric: c for c in d.changes}
    assert (by["eval.acc"].old, by["eval.acc"].new, by["eval.acc"].pct) == (0.5, 0.75, 50.0)
    assert not by["eval.loss"].changed
    assert d.notes == []


def test_workspace_vs_head(git_repo):
    git_repo.commit({"metrics.json": _metrics(acc=0.5)})
    git_repo.write({"metrics.json": _metrics(acc=0.6)})  # uncommitted
    d = diff_revisions("HEAD", "workspace", ["metrics.json"], git_repo.path)
    [c] = d.changes
    assert (c.old, c.new) == (0.5, 0.6)
    same = diff_revisions("HEAD", "HEAD", ["metrics.json"], git_repo.path)
    assert same.visible(show_all=False) == []


def test_file_missing_at_a_revision_becomes_a_note(git_repo):
    git_repo.commit({"a.json": _metrics(acc=0.5)}, "one")
    git_repo.commit({"b.yaml": "eval:\n  f1: 0.7\n"}, "two")
    d = diff_revisions("HEAD~1", "HEAD", ["a.json", "b.yaml"], git_repo.path)
    assert d.notes == ["b.yaml: missing at HEAD~1"]
    rows = {(c.path, c.metric): (c.old, c.new) for c in d.changes}
    assert rows == {("a.json", "eval.acc"): (0.5, 0.5), ("b.yaml", "eval.f1"): (None, 0.7)}


def test_file_deleted_in_workspace(git_repo):
    git_repo.commit({"m.json": _metrics(acc=0.5)})
    (git_repo.path / "m.json").unlink()
    d = diff_revisions("HEAD", "workspace", ["m.json"], git_repo.path)
    assert d.notes == ["m.json: missing at workspace"]
    [c] = d.changes
    assert (c.old, c.new) == (0.5, None)


def test_file_with_spaces_missing_at_a_revision(git_repo):
    git_repo.commit({"other.json": "{}"}, "one")
    git_repo.commit({"my metrics.json": _metrics(acc=0.5)}, "two")
    d = diff_revisions("HEAD~1", "HEAD", ["my metrics.json"], git_repo.path)
    assert d.notes == ["my metrics.json: missing at HEAD~1"]
    [c] = d.changes
    assert (c.old, c.new) == (None, 0.5)


@pytest.mark.parametrize("files", [["m.json", "m.json", "n.json"], ["m.json", "./m.json", "n.json"]])
def test_a_file_named_twice_does_not_lose_the_others(git_repo, files):
    # `metrics diff -t m.json -t m.json -t n.json`, or overlapping globs, name a file twice.
    git_repo.commit({"m.json": _metrics(acc=0.5), "n.json": _metrics(f1=0.1)}, "one")
    git_repo.commit({"m.json": _metrics(acc=0.6), "n.json": _metrics(f1=0.2)}, "two")
    d = diff_revisions("HEAD~1", "HEAD", files, git_repo.path)
    rows = {(c.path, c.metric): (c.old, c.new) for c in d.changes}
    assert rows[("n.json", "eval.f1")] == (0.1, 0.2)
    assert rows[("m.json", "eval.acc")] == (0.5, 0.6)
    assert d.notes == []


def test_metric_missing_on_one_side(git_repo):
    git_repo.commit({"m.toml": "[eval]\nacc = 0.5\nold_only = 1\n"}, "one")
    git_repo.commit({"m.toml": "[eval]\nacc = 0.5\nnew_only = 2\n"}, "two")
    d = diff_revisions("HEAD~1", "HEAD", ["m.toml"], git_repo.path)
    rows = {c.metric: (c.old, c.new, c.diff) for c in d.visible(show_all=False)}
    assert rows == {"eval.old_only": (1, None, None), "eval.new_only": (None, 2, None)}


def test_malformed_file_at_a_revision_becomes_a_note(git_repo):
    git_repo.commit({"m.json": "{not json"}, "one")
    git_repo.commit({"m.json": _metrics(acc=0.5)}, "two")
    d = diff_revisions("HEAD~1", "HEAD", ["m.json"], git_repo.path)
    assert len(d.notes) == 1
    assert d.notes[0].startswith("HEAD~1: m.json: malformed JSON metrics")
    [c] = d.changes
    assert (c.old, c.new) == (None, 0.5)


def test_paths_are_relative_to_base_in_a_subdirectory(git_repo):
    git_repo.commit({"proj/m.json": _metrics(acc=0.1)}, "one")
    git_repo.commit({"proj/m.json": _metrics(acc=0.2)}, "two")
    d = diff_revisions("HEAD~1", "HEAD", ["m.json"], git_repo.path / "proj")
    [c] = d.changes
    assert (c.path, c.old, c.new) == ("m.json", 0.1, 0.2)


def test_branch_and_sha_revisions(git_repo):
    first = git_repo.commit({"m.json": _metrics(acc=0.1)}, "one")
    git_repo.commit({"m.json": _metrics(acc=0.3)}, "two")
    d = diff_revisions(first, "main", ["m.json"], git_repo.path)
    [c] = d.changes
    assert (c.old, c.new) == (0.1, 0.3)


def test_unknown_revision_is_a_user_error(git_repo):
    git_repo.commit({"m.json": _metrics(acc=0.1)})
    with pytest.raises(UserError) as info:
        diff_revisions("no-such-branch", "HEAD", ["m.json"], git_repo.path)
    assert "no-such-branch" in str(info.value)
    assert "unknown git revision" in str(info.value)


def test_revision_outside_a_git_repo_is_a_user_error(tmp_path):
    (tmp_path / "m.json").write_text(_metrics(acc=0.1))
    with pytest.raises(UserError, match="not inside a git repository"):
        diff_revisions("HEAD", "workspace", ["m.json"], tmp_path)


# --- which files: each revision's own list (lepton.yml, else dvc.yaml) ------------------------------------

CONFIG = "model: {{name: m}}\ntrain:\n  command: 'true'\n  metrics: {files}\n"


def test_each_revision_reads_its_own_lepton_yml_so_a_rename_is_removed_and_added(git_repo):
    git_repo.commit({"lepton.yml": CONFIG.format(files="[old.json, same.json]"),
                     "old.json": _metrics(acc=0.5), "same.json": _metrics(f1=0.1)}, "one")
    git_repo.commit({"lepton.yml": CONFIG.format(files="[new.json, ./same.json]"),
                     "new.json": _metrics(acc=0.6), "same.json": _metrics(f1=0.2)}, "two", remove=("old.json",))
    d = diff_revisions("HEAD~1", "HEAD", None, git_repo.path)
    rows = {(c.path, c.metric): (c.old, c.new) for c in d.changes}
    assert rows == {("old.json", "eval.acc"): (0.5, None), ("new.json", "eval.acc"): (None, 0.6),
                    ("same.json", "eval.f1"): (0.1, 0.2)}  # ./same.json is same.json
    assert sorted(d.notes) == ["new.json: not listed in lepton.yml at HEAD~1", "old.json: not listed in lepton.yml at HEAD"]


def test_workspace_side_reads_the_lepton_yml_on_disk(git_repo):
    git_repo.commit({"lepton.yml": CONFIG.format(files="[a.json]"), "a.json": _metrics(acc=0.5)}, "one")
    git_repo.write({"lepton.yml": CONFIG.format(files="[b.json]"), "b.json": _metrics(acc=0.7)})
    d = diff_revisions("HEAD", "workspace", None, git_repo.path)
    rows = {(c.path, c.metric): (c.old, c.new) for c in d.changes}
    assert rows == {("a.json", "eval.acc"): (0.5, None), ("b.json", "eval.acc"): (None, 0.7)}


def test_explicit_files_override_the_lists(git_repo):
    git_repo.commit({"lepton.yml": CONFIG.format(files="[a.json]"), "a.json": _metrics(acc=0.5), "b.json": _metrics(x=1)}, "one")
    git_repo.commit({"b.json": _metrics(x=2)}, "two")
    d = diff_revisions("HEAD~1", "HEAD", ["./b.json"], git_repo.path)
    assert [(c.path, c.metric, c.old, c.new) for c in d.changes] == [("b.json", "eval.x", 1, 2)]


DVC_YAML = """\
metrics:
  - top.json
stages:
  train:
    cmd: python train.py
    metrics:
      - scores.json:
          cache: false
      - ./plain.yaml
  evaluate:
    wdir: eval
    cmd: python eval.py
    metrics: [report.toml]
"""


def test_without_lepton_yml_the_dvc_yaml_metrics_are_read_at_each_revision(git_repo):
    files = {"top.json": _metrics(a=1), "scores.json": _metrics(b=2), "plain.yaml": "c: 1e-3\n",
             "eval/report.toml": "[d]\ne = 4\n"}
    git_repo.commit({"dvc.yaml": DVC_YAML, **files}, "one")
    git_repo.write({"scores.json": _metrics(b=3), "plain.yaml": "c: 2e-3\n", "eval/report.toml": "[d]\ne = 5\n",
                    "top.json": _metrics(a=1)})
    d = diff_revisions("HEAD", "workspace", None, git_repo.path)
    rows = {(c.path, c.metric): (c.old, c.new) for c in d.changes}
    assert rows == {("top.json", "eval.a"): (1, 1), ("scores.json", "eval.b"): (2, 3),
                    ("plain.yaml", "c"): (0.001, 0.002), ("eval/report.toml", "d.e"): (4, 5)}
    assert d.notes == []


def test_a_revision_with_neither_file_has_no_metrics_and_says_so(git_repo):
    git_repo.commit({"other.txt": "x"}, "one")
    git_repo.commit({"lepton.yml": CONFIG.format(files="[m.json]"), "m.json": _metrics(acc=0.5)}, "two")
    d = diff_revisions("HEAD~1", "HEAD", None, git_repo.path)
    assert [(c.path, c.old, c.new) for c in d.changes] == [("m.json", None, 0.5)]
    assert "HEAD~1: no lepton.yml or dvc.yaml, so no metrics files" in d.notes


def test_unparsable_lepton_yml_at_a_revision_is_a_note(git_repo):
    git_repo.commit({"lepton.yml": "model: [unclosed\n", "m.json": _metrics(acc=0.5)}, "one")
    git_repo.commit({"lepton.yml": CONFIG.format(files="[m.json]"), "m.json": _metrics(acc=0.6)}, "two")
    d = diff_revisions("HEAD~1", "HEAD", None, git_repo.path)
    assert any(n.startswith("HEAD~1: HEAD~1:lepton.yml: not valid YAML") for n in d.notes), d.notes
    assert [(c.path, c.old, c.new) for c in d.changes] == [("m.json", None, 0.6)]


def test_nan_at_one_revision_is_a_note_and_the_rest_of_the_file_counts(git_repo):
    git_repo.commit({"m.json": '{"acc": NaN, "loss": 0.5}'}, "one")
    git_repo.commit({"m.json": '{"acc": 0.9, "loss": 0.4}'}, "two")
    d = diff_revisions("HEAD~1", "HEAD", ["m.json"], git_repo.path)
    rows = {c.metric: (c.old, c.new) for c in d.changes}
    assert rows == {"acc": (None, 0.9), "loss": (0.5, 0.4)}
    assert d.notes == ["HEAD~1: m.json: metric 'acc' is nan; skipped (metrics must be finite numbers)"]


def test_one_git_process_per_revision(git_repo, monkeypatch):
    import lepton_ci.gitio as gitio

    git_repo.commit({"lepton.yml": CONFIG.format(files="[a.json, b.json]"), "a.json": _metrics(x=1), "b.json": _metrics(y=1)})
    git_repo.commit({"a.json": _metrics(x=2)})
    started = []
    real = gitio.subprocess.Popen

    def counting(args, *a, **kw):
        started.append(args)
        return real(args, *a, **kw)

    monkeypatch.setattr(gitio.subprocess, "Popen", counting)
    d = diff_revisions("HEAD~1", "HEAD", None, git_repo.path)
    assert [c.new for c in d.changes if c.changed] == [2]
    assert started == [["git", "cat-file", "--batch"]] * 2


def test_blob_over_the_limit_at_a_revision_is_refused_and_the_reader_stays_in_step(git_repo):
    from lepton_ci.gitio import BlobReader

    git_repo.commit({"big.json": '{"a": 1, "pad": "' + "x" * 5000 + '"}', "small.json": '{"a": 2}'})
    with BlobReader("HEAD", git_repo.path) as reader:
        with pytest.raises(UserError) as info:
            reader.read([Path("big.json")], limit=1000)
        assert info.value.where == "HEAD:./big.json"
        assert "larger than the limit of 1000 bytes" in info.value.message
        assert reader.read([Path("small.json")], limit=1000) == {Path("small.json"): b'{"a": 2}'}
