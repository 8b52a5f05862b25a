"""The generated fast checker (lepton_ci/schemas/lepton_schema_check.py) must agree with jsonschema on
every config: a config it wrongly accepted would skip validation altogether. Mutations of real configs
(each value replaced by values of other types, each key dropped, unknown keys added) probe the schema."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml
from jsonschema import Draft202012Validator

from lepton_ci.config import _passes_fast_check, load_schema

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "examples" / "sklearn-digits" / "lepton.yml", ROOT / "tests" / "e2e" / "workflows" / "lepton.yml"]
REPLACEMENTS: list[Any] = [None, True, 0, -1, 1.5, "", "x", "x\n", "digits\n", "A_1", "file://r", [], ["a"], ["a\n"], ["A_1"], {}, {"zzz": 1}]


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _drop(obj: Any, path: tuple) -> Any:
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def mutations() -> Iterator[Any]:
    for config in CONFIGS:
        data = yaml.safe_load(config.read_text())
        yield data
        for path in _paths(data):
            if not path:
                continue
            for value in REPLACEMENTS:
                yield _set(data, path, value)
            yield _drop(data, path)
            parent = _set(data, path, {"unknown_key": 1}) if isinstance(_get(data, path), dict) else None
            if parent is not None:
                yield parent


def _get(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def test_fast_check_agrees_with_jsonschema() -> None:
    validator = Draft202012Validator(load_schema())
    checked = disagreements = 0
    examples = []
    for data in mutations():
        slow = validator.is_valid(data)
        fast = _passes_fast_check(data)
        checked += 1
        if slow != fast:
            disagreements += 1
            examples.append((fast, slow, data))
    assert checked > 500
    assert not examples, f"{disagreements} of {checked} disagree; first (fast, jsonschema, config): {examples[0]}"


def test_some_mutations_are_invalid_and_some_valid() -> None:
    validator = Draft202012Validator(load_schema())
    verdicts = {validator.is_valid(d) for d in mutations()}
    assert verdicts == {True, False}


def test_generated_checker_is_up_to_date() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-schema-check"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
