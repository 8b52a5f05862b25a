"""lepton.yml: loading, validation against the shipped JSON Schema, and errors that carry file:line.

YAML is composed into nodes first so every value keeps its line, and the node graph is checked by
`lepton_ci.yamlsafe.check_graph` before anything is built (a recursive alias or an alias bomb is one
ConfigError with file:line, not a hang or an out-of-memory kill). Scalars follow PyYAML's YAML 1.1 rules
plus 1.2 floats with an exponent (see lepton_ci/yamlsafe.py for why). jsonschema then validates the
plain data, and each error is mapped back to the line of the key it concerns. Only the first problem
(by line) is reported: one clear line beats a wall of cascading messages.

Names are checked again here with `re.fullmatch`: the schema's `^...$` patterns are run by jsonschema
with Python's `re.search`, where `$` also matches before a final newline, so "digits\n" would pass.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lepton_ci.errors import ConfigError, UserError
from lepton_ci.fsutil import short_repr
from lepton_ci.limits import CONFIG_MAX_BYTES, read_limited

DEFAULT_NAME = "lepton.yml"
DEFAULT_REGISTRY = "file://.lepton/registry"
DEFAULT_STEPS = ["train", "gate", "tag", "deploy", "report"]
SCHEMA_PATH = Path(__file__).with_name("schemas") / "lepton.schema.json"

KeyPath = tuple[Any, ...]


def format_keypath(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_NO_FINAL_NEWLINE = "(?!\\n)"
MODEL_NAME_WANT = (
    "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters"
)


def _yaml_loader(text: str) -> Any:
    from lepton_ci.yamlsafe import loader_class

    return loader_class(yaml12=False)(text)


def _clip(text: str, limit: int = 200) -> str:
    """A message from a library (PyYAML, jsonschema) that may quote the user's value: one bounded line."""
    line = " ".join(str(text).split("\n"))
    return line if len(line) <= limit else line[:limit] + "…"


def _yaml_problem(exc: Exception) -> str:
    return _clip(getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0])


def parse_yaml_with_lines(text: str, filename: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML into plain data plus a map from key path to 1-based line number."""
    import yaml

    from lepton_ci.yamlsafe import YamlError, YamlLimitError, compose

    loader = _yaml_loader(text)
    try:
        node = compose(loader, filename)  # refuses recursive aliases and alias bombs before building
    except YamlLimitError as exc:
        raise ConfigError(exc.problem, where=f"{filename}:{exc.line or 1}") from None
    except YamlError as exc:
        raise ConfigError(f"not valid YAML: {exc.problem}", where=f"{filename}:{exc.line or 1}") from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    if node is None:
        return None, lines
    # A tagged or oversized scalar (`!!int abc`, `!!timestamp x`, a 5,000-digit integer) fails inside
    # PyYAML's constructors with plain Python errors; each is the user's bad value, not a crash.
    BAD_VALUE = (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError)

    def build(n: Any, path: KeyPath) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            own = sum(1 for k, _ in n.value if k.tag != "tag:yaml.org,2002:merge")
            try:
                loader.flatten_mapping(n)  # resolve `<<:` merge keys, as yaml.safe_load would
            except yaml.YAMLError as exc:
                raise ConfigError(
                    f"bad merge key: {_yaml_problem(exc)}", where=f"{filename}:{n.start_mark.line + 1}"
                ) from None
            merged = len(n.value) - own  # flatten_mapping puts merged pairs first; own keys override them
            out: dict[Any, Any] = {}
            own_keys: set[Any] = set()
            for index, (key_node, value_node) in enumerate(n.value):
                try:
                    key = loader.construct_object(key_node, deep=True)
                except BAD_VALUE as exc:
                    raise ConfigError(
                        f"bad key: {_yaml_problem(exc)}", where=f"{filename}:{key_node.start_mark.line + 1}"
                    ) from None
                if not isinstance(key, (str, int, float, bool)):
                    raise ConfigError(
                        "mapping keys must be plain scalars", where=f"{filename}:{key_node.start_mark.line + 1}"
                    )
                if index >= merged:
                    if key in own_keys:
                        raise ConfigError(
                            f"duplicate key {short_repr(format_keypath(path + (key,)), 120)} "
                            f"(first at line {lines[path + (key,)]})",
                            where=f"{filename}:{key_node.start_mark.line + 1}",
                        )
                    own_keys.add(key)
                lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = build(value_node, path + (key,))
                lines[path + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(n.value)]
        try:
            return loader.construct_object(n, deep=True)
        except BAD_VALUE as exc:
            raise ConfigError(f"bad value: {_yaml_problem(exc)}", where=f"{filename}:{n.start_mark.line + 1}") from None

    return build(node, ()), lines


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
}


def _describe(value: Any) -> str:
    kind = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "empty",
    }.get(type(value), type(value).__name__)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return f"{kind} {short_repr(value)}"
    return kind


def _error_message(err: Any, lines: dict[KeyPath, int]) -> tuple[KeyPath, str]:
    """Turn one jsonschema error into (key path it concerns, message)."""
    path: KeyPath = tuple(err.absolute_path)
    name = format_keypath(path)
    shown_name = short_repr(name, 120)
    schema = err.schema if isinstance(err.schema, dict) else {}
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in err.instance if k not in schema.get("properties", {})]
        key = min(unknown, key=lambda k: (_line_for(lines, path + (k,)), str(k)))  # the first in the file
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        return path + (key,), (
            f"unknown key {short_repr(format_keypath(path + (key,)), 120)} (expected one of: {', '.join(allowed)}){did}"
        )
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        where = f"{shown_name}" if path else "the config"
        return path, f"{where} is missing required key {short_repr(missing)}"
    if v == "type":
        expected = err.validator_value
        expected = expected if isinstance(expected, list) else [expected]
        want = " or ".join(_TYPE_NAMES.get(t, str(t)) for t in expected)
        return path, f"{shown_name} must be {want}, got {_describe(err.instance)}"
    if v == "enum":
        choices = ", ".join(map(str, err.validator_value))
        return path, f"{shown_name} must be one of: {choices}; got {short_repr(err.instance)}"
    if v == "const":
        return path, f"{shown_name} must be {short_repr(err.validator_value)}; got {short_repr(err.instance)}"
    if v == "pattern":
        shown = str(err.validator_value).replace(_NO_FINAL_NEWLINE, "")  # the guard is noise to a reader
        return path, f"{shown_name} must match {shown}; got {short_repr(err.instance)}"
    if v == "anyOf" and path and path[-2:-1] == ("rules",):
        return path, f"{shown_name} needs at least one of min, max, max_drop, max_drop_pct"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return path, f"{shown_name} must be {op} {err.validator_value}; got {short_repr(err.instance)}"
    if v == "minLength":
        return path, f"{shown_name} must not be empty"
    return path, f"{shown_name}: {_clip(err.message)}"


def _line_for(lines: dict[KeyPath, int], path: KeyPath) -> int:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)


def _passes_fast_check(data: Any) -> bool:
    """The generated checker (scripts/gen-schema-check) accepts a valid config in about a millisecond;
    jsonschema's import alone costs tens of milliseconds on every command, so it only runs to explain
    a failure. Disagreement can only cost time: jsonschema has the last word."""
    from fastjsonschema import JsonSchemaException

    from lepton_ci.schemas.lepton_schema_check import validate as check

    try:
        check(data)
    except JsonSchemaException:
        return False
    return True


def _check_names(data: dict[str, Any], lines: dict[KeyPath, int], filename: str) -> None:
    """Whole-string checks of the names that become registry paths, tags and URLs (see the module
    docstring: a pattern alone lets a trailing newline through)."""
    checks: list[tuple[KeyPath, Any, re.Pattern[str], str]] = []
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        checks.append((("model", "name"), model["name"], MODEL_NAME_RE, MODEL_NAME_WANT))
    aliases = (data.get("tag") or {}).get("aliases") if isinstance(data.get("tag"), dict) else None
    for i, alias in enumerate(aliases if isinstance(aliases, list) else []):
        if isinstance(alias, str):
            checks.append((("tag", "aliases", i), alias, ALIAS_RE, "an alias name"))
    deploy = data.get("deploy")
    if isinstance(deploy, dict) and isinstance(deploy.get("alias"), str):
        checks.append((("deploy", "alias"), deploy["alias"], ALIAS_RE, "an alias name"))
    for path, value, pattern, want in checks:
        if not pattern.fullmatch(value):
            raise ConfigError(
                f"{format_keypath(path)!r} must be {want}; got {short_repr(value)}",
                where=f"{filename}:{_line_for(lines, path)}",
            )
    for path, value in sorted(_name_like_strings(data), key=lambda pv: _line_for(lines, pv[0])):  # first in the file
        bad = LINE_BREAKING_RE.search(value)
        if bad:
            raise ConfigError(
                f"{format_keypath(path)!r} must not contain control characters or line separators "
                f"(found {bad.group()!r} in {short_repr(value)})",
                where=f"{filename}:{_line_for(lines, path)}",
            )


# Characters that end or hide a line when a name is printed in a one-line message, a step summary or a
# report table: C0 and C1 controls (tab, newline, \x85 NEL, ESC…), DEL, and Unicode line/paragraph separators.
LINE_BREAKING_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Strings of lepton.yml that name something (a metric, a file, a ref, a host) and are printed back as part of
# one line. Not here: train.command and deploy.smoke_request (multi-line values are normal there), train.env
# values and signing.public_key (a PEM block); model.name and the aliases have their own whole-string patterns.
_NAME_LIKE: tuple[KeyPath, ...] = (
    ("model", "file"),
    ("train", "workdir"),
    ("train", "output"),
    ("gate", "baseline"),
    ("gate", "output"),
    ("registry",),
    ("deploy", "host"),
    ("deploy", "output"),
    ("report", "output"),
)
_NAME_LIKE_LISTS: tuple[KeyPath, ...] = (("train", "metrics"), ("train", "artifacts"), ("train", "data"))


def _name_like_strings(data: dict[str, Any]) -> list[tuple[KeyPath, str]]:
    def get(path: KeyPath) -> Any:
        node: Any = data
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    found: list[tuple[KeyPath, str]] = []
    rules = get(("gate", "rules"))
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, dict) and isinstance(rule.get("metric"), str):
            found.append((("gate", "rules", i, "metric"), rule["metric"]))
    found += [(path, value) for path in _NAME_LIKE if isinstance(value := get(path), str)]
    for path in _NAME_LIKE_LISTS:
        items = get(path)
        found += [
            (path + (i,), item)
            for i, item in enumerate(items if isinstance(items, list) else [])
            if isinstance(item, str)
        ]
    return found


def validate(data: Any, lines: dict[KeyPath, int], filename: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {_describe(data)}", where=f"{filename}:1")
    if _passes_fast_check(data):
        _check_names(data, lines, filename)
        return
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(load_schema())
    errors = list(validator.iter_errors(data))
    if not errors:  # the fast checker refused what jsonschema accepts: the names still need their check
        _check_names(data, lines, filename)
        return
    located = []
    for err in errors:
        path, message = _error_message(err, lines)
        located.append((_line_for(lines, path), message))
    if not located:
        _check_names(data, lines, filename)
        return
    located.sort()
    line, message = located[0]
    more = f" (and {len(located) - 1} more problem(s))" if len(located) > 1 else ""
    raise ConfigError(message + more, where=f"{filename}:{line}")


@dataclass
class Config:
    """A validated lepton.yml. Paths in it are relative to the directory holding the file."""

    path: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict, repr=False)

    @property
    def root(self) -> Path:
        return self.path.parent

    def where(self, *keypath: Any) -> str:
        return f"{self.path.name}:{_line_for(self.lines, tuple(keypath))}"

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.data.get(name) or {})

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def model_name(self) -> str:
        return self.data["model"]["name"]

    @property
    def framework(self) -> str:
        return self.data["model"].get("framework", "sklearn")

    @property
    def model_file(self) -> str | None:
        return self.data["model"].get("file")

    @property
    def registry_url(self) -> str:
        return os.environ.get("LEPTON_CI_REGISTRY") or self.data.get("registry") or DEFAULT_REGISTRY

    @property
    def steps(self) -> list[str]:
        return list(self.data.get("steps") or DEFAULT_STEPS)

    def output(self, section: str, default: str) -> Path:
        return self.resolve(self.section(section).get("output", default))

    @property
    def run_path(self) -> Path:
        return self.output("train", ".lepton/run.json")

    @property
    def gate_path(self) -> Path:
        return self.output("gate", ".lepton/gate.json")

    @property
    def deployment_path(self) -> Path:
        return self.output("deploy", ".lepton/deployment.json")

    @property
    def report_path(self) -> Path:
        return self.output("report", ".lepton/report.md")


def load_config(path: str | os.PathLike) -> Config:
    p = Path(path)
    try:
        text = read_limited(p, CONFIG_MAX_BYTES, "config file", p.name).decode()
    except FileNotFoundError:
        raise UserError(f"config file not found: {p} (create lepton.yml or pass --config PATH)") from None
    except IsADirectoryError:
        raise UserError(f"config path is a directory, expected a lepton.yml file: {p}") from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", where=f"{p.name}:1") from None
    data, lines = parse_yaml_with_lines(text, p.name)
    validate(data, lines, p.name)
    return Config(path=p.resolve(), data=data, lines=lines)


def find_config(explicit: str | None) -> Path:
    """The config the user meant: --config, then $LEPTON_CI_CONFIG, then ./lepton.yml."""
    return Path(explicit or os.environ.get("LEPTON_CI_CONFIG") or DEFAULT_NAME)
