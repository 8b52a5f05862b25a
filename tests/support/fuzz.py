"""Structure-aware mutators for the CLI fuzz test (tests/integration/test_fuzz_cli.py).

Every mutator takes a seeded `random.Random` and the bytes of a VALID file and returns
`(mutated bytes, description)`; the description says what was changed so a failure can be reproduced
by hand. Nothing here touches the file system except `Snapshot`, which restores a project directory
to the state it had when the snapshot was taken (cheaper than copying the project for every case).

Mutations are deliberately nasty but bounded: the biggest value is a 64 MiB + 1 sparse file, the
deepest nesting 5,000 levels, and YAML alias expansion stays small in process (the exponential
"billion laughs" cases run in a memory-limited subprocess, see the test).
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

MiB = 1 << 20

# --- value pools --------------------------------------------------------------------------------------

DEEP_JSON = "[" * 5000 + "]" * 5000
DEEP_JSON_OBJ = '{"a":' * 5000 + "1" + "}" * 5000

# Raw JSON tokens (not Python values) so that non-standard ones (NaN, 1e999, 10**400) reach the parser.
JSON_POOL: list[str] = [
    "null", "true", "false", "0", "-1", "1" + "0" * 400, "-" + "9" * 400, "1e999", "-1e999", "1e-400", "NaN",
    "Infinity", "-Infinity", '""', json.dumps("x" * 10000), '"\\n"', '"a\\nb"', "[]", "{}", "[0.9]",
    '{"a": {}}', DEEP_JSON, DEEP_JSON_OBJ, '"0.9"', "0.5", "1.5", "-0.0", "9007199254740993", '"\\u0000"',
    '"../../etc/passwd"', '"/etc/passwd"', '"sha256:' + "0" * 64 + '"', '"sha256:zz"', '"' + "a" * 64 + '"',
    '{"a.b": 1, "a": {"b": 2}}', '[{"path": "x", "sha256": "' + "0" * 64 + '", "size": 1}]', '"\\ud800"',
    '"\\u2028"', '"latest"', '"production"', '"v1"', "3", "2", "99", '{"": 1}', '{"\\n": 1}', "[null]", "[[]]",
    '"succeeded"', '"pass"', '"fail"',
]

YAML_POOL: list[str] = [
    "null", "~", "", "true", "yes", "no", "on", "0", "-1", "1" + "0" * 400, "1e999", ".nan", ".inf", "-.inf",
    '"0.9"', "[]", "{}", "[0.9]", "{a: {}}", '"' + "x" * 10000 + '"', "0x1F", "0o17", "017", "1_000", "1e-3",
    "!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "!!set {a, b}", "2001-12-14",
    "2001-12-14T21:59:43.10-05:00", '"\\n"', '"digits\\n"', '"a\\tb"', "*undefined_alias", '"\\0"', "'\\x01'",
    "|\n  block\n  text", "!!str 1", "!!int x", "!!float abc", "!!map [1]", "-", "? complex\n: key", "@at",
    "`tick", "%pct", "[1, [2, [3, [4]]]]", "[" * 5000 + "]" * 5000, "{a: 1, a: 2}", "&anc 5", "!custom x",
    "'\u2028'", "\x85", "0.9 # comment", '"toy"', "production", "git:HEAD", "../../etc", "/etc/passwd",
]

TOML_POOL: list[str] = [
    "nan", "inf", "-inf", "+nan", "1e999", "1" + "0" * 400, "-" + "9" * 400, '"0.9"', "[0.9]", "{a = {}}", "true",
    "1979-05-27", "1979-05-27T07:32:00Z", "07:32:00", '"' + "x" * 10000 + '"', '"\\n"', "[]", "{}", "0x1F",
    "0o17", "0b11", "1_000", "-0.0", "[" * 5000 + "]" * 5000, "'''multi\nline'''", '"\\u0000"', "[[1], [2.5]]",
    '{"a.b" = 1}', "", "=", "0.5",
]

NON_UTF8 = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"]
CONTROL = ["\x00", "\x01", "\x07", "\x1b[31m", "\x7f", "\x85", "\u2028", "\ufeff", "\r", "\x0b", "\x0c"]


def _pick(rng: random.Random, pool: list[str]) -> str:
    return pool[rng.randrange(len(pool))]


def excerpt(data: bytes, limit: int = 240) -> str:
    """A printable, bounded view of a mutated file for failure messages."""
    text = data.decode("utf-8", "backslashreplace")
    if len(text) > limit:
        text = text[: limit // 2] + f" …[{len(text) - limit} chars]… " + text[-limit // 2:]
    return text.encode("unicode_escape").decode("ascii")


# --- byte-level mutations (any format) ----------------------------------------------------------------

@dataclass
class Huge:
    """A marker for "write a sparse file of `size` bytes", so 64 MiB cases cost no memory or disk."""

    size: int
    prefix: bytes = b""


def byte_mutation(rng: random.Random, data: bytes, huge_size: int) -> tuple[bytes | Huge, str]:
    op = rng.choice(["truncate", "flip", "non_utf8", "empty", "bom", "garbage_tail", "nul", "huge", "crlf",
                     "only_ws", "dup_content"])
    if op == "truncate" and data:
        cut = rng.randrange(len(data))
        return data[:cut], f"truncated at byte {cut}"
    if op == "flip" and data:
        out = bytearray(data)
        positions = [rng.randrange(len(out)) for _ in range(rng.randint(1, 4))]
        for pos in positions:
            out[pos] ^= 1 << rng.randrange(8)
        return bytes(out), f"bit flips at bytes {positions}"
    if op == "non_utf8":
        pos = rng.randrange(len(data) + 1)
        bad = rng.choice(NON_UTF8)
        return data[:pos] + bad + data[pos:], f"non-UTF-8 {bad!r} inserted at byte {pos}"
    if op == "bom":
        return b"\xef\xbb\xbf" + data, "UTF-8 BOM prepended"
    if op == "garbage_tail":
        return data + b"\n}}]] garbage", "garbage appended"
    if op == "nul":
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + b"\x00" + data[pos:], f"NUL inserted at byte {pos}"
    if op == "huge":
        return Huge(huge_size + 1, data[:1]), f"sparse file of {huge_size + 1} bytes (over the limit)"
    if op == "crlf":
        return data.replace(b"\n", b"\r\n"), "CRLF line endings"
    if op == "only_ws":
        return b" \n\t\n", "whitespace only"
    if op == "dup_content":
        return data + data, "content written twice"
    return b"", "empty file"


# --- JSON ----------------------------------------------------------------------------------------------

_SENT = "\u0000FUZZ\u0000"
_SENT_KEY = "\u0000DUPKEY\u0000"
_SENT_JSON = json.dumps(_SENT)
_SENT_KEY_JSON = json.dumps(_SENT_KEY)


def _paths(obj: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, path + (i,))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def _dump(obj: Any, rng: random.Random) -> str:
    return json.dumps(obj, indent=rng.choice([None, 2]), ensure_ascii=rng.random() < 0.5)


def _fmt_path(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "(root)"


KINDS = ["run", "gate", "model-version", "deployment", "lepton-registry", "", "RUN", None, 1, ["run"]]
SCHEMA_VERSIONS = [0, -1, 2, 3, 99, "1", 1.0, 1.5, True, None, "1" + "0" * 400, [1]]


def json_mutation(rng: random.Random, data: bytes, huge_size: int = 64 * MiB) -> tuple[bytes | Huge, str]:
    """One structure-aware mutation of a valid JSON document (falls back to bytes when it is not one)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return byte_mutation(rng, data, huge_size)
    r = rng.random()
    if r < 0.12:
        return byte_mutation(rng, data, huge_size)
    paths = _paths(doc)
    if r < 0.22 and isinstance(doc, dict):
        if rng.random() < 0.5:
            value = rng.choice(KINDS)
            doc["kind"] = value
            return _dump(doc, rng).encode(), f"kind = {value!r}"
        token = rng.choice(SCHEMA_VERSIONS)
        doc["schema_version"] = _SENT
        text = _dump(doc, rng).replace(_SENT_JSON, token if isinstance(token, str) and token.isdigit() else json.dumps(token))
        return text.encode(), f"schema_version = {token!r}"[:120]
    if r < 0.62:
        path = rng.choice(paths)
        token = _pick(rng, JSON_POOL)
        doc = _set(doc, path, _SENT)
        return _dump(doc, rng).replace(_SENT_JSON, token, 1).encode(), f"{_fmt_path(path)} = {excerpt(token.encode(), 80)}"
    dict_paths = [p for p in paths if isinstance(_get(doc, p), dict)]
    keyed = [p for p in paths if p and isinstance(_get(doc, p[:-1]), dict)]
    if r < 0.75 and keyed:
        path = rng.choice(keyed)
        del _get(doc, path[:-1])[path[-1]]
        return _dump(doc, rng).encode(), f"deleted key {_fmt_path(path)}"
    if r < 0.85 and dict_paths:
        path = rng.choice(dict_paths)
        key = rng.choice(["fuzz_unknown", "extra", "__proto__", "", "\n", "x" * 300, "kind", "a.b"])
        token = _pick(rng, JSON_POOL)
        node = _get(doc, path)
        node[_SENT_KEY] = _SENT
        text = _dump(doc, rng).replace(f"{_SENT_KEY_JSON}: {_SENT_JSON}", f"{json.dumps(key)}: {token}", 1)
        return text.encode(), f"added key {key[:20]!r} = {excerpt(token.encode(), 60)} under {_fmt_path(path)}"
    dup_paths = [p for p in dict_paths if _get(doc, p)]
    if dup_paths:
        path = rng.choice(dup_paths)
        node = _get(doc, path)
        key = rng.choice(list(node))
        token = _pick(rng, JSON_POOL)
        node[_SENT_KEY] = _SENT
        text = _dump(doc, rng).replace(f"{_SENT_KEY_JSON}: {_SENT_JSON}", f"{json.dumps(key)}: {token}", 1)
        return text.encode(), f"duplicate key {_fmt_path(path + (key,))} = {excerpt(token.encode(), 60)}"
    return byte_mutation(rng, data, huge_size)


def jsonl_mutation(rng: random.Random, data: bytes, huge_size: int = 64 * MiB) -> tuple[bytes | Huge, str]:
    """history.jsonl: mutate one line as JSON, or drop/duplicate/swap/blank lines."""
    lines = data.decode().splitlines()
    r = rng.random()
    if r < 0.1 or not lines:
        return byte_mutation(rng, data, huge_size)
    i = rng.randrange(len(lines))
    if r < 0.65:
        new, desc = json_mutation(rng, lines[i].encode(), huge_size)
        if isinstance(new, Huge):
            return new, desc
        # a mutated line must stay one line unless the mutation itself was about bytes
        lines[i] = new.decode("utf-8", "surrogateescape").replace("\n", " ") if b"\n" in new and rng.random() < 0.7 else \
            new.decode("utf-8", "surrogateescape")
        return "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n", f"line {i + 1}: {desc}"
    op = rng.choice(["drop", "dup", "swap", "blank", "no_newline", "reverse", "unterminated"])
    if op == "drop":
        del lines[i]
    elif op == "dup":
        lines.insert(i, lines[i])
    elif op == "swap" and len(lines) > 1:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "blank":
        lines.insert(i, "")
    elif op == "reverse":
        lines.reverse()
    elif op == "unterminated":
        lines.append('{"action": "move", "alias": "candidate"')
    text = "\n".join(lines) + ("" if op == "no_newline" else "\n")
    return text.encode(), f"history {op} at line {i + 1}"


# --- YAML ----------------------------------------------------------------------------------------------

_KV = re.compile(r"^(\s*(?:- )?)([^:#\s][^:#]*):(\s*)(.*)$")


def _yaml_anchor_block(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["recursive_list", "recursive_map", "merge_list", "merge_scalar", "small_bomb", "alias_key",
                       "self_merge", "undefined_alias", "anchor_reuse"])
    if kind == "recursive_list":
        return "fuzz_rec: &a [*a]\n", kind
    if kind == "recursive_map":
        return "fuzz_rec: &a {k: *a}\n", kind
    if kind == "merge_list":
        return "fuzz_a: &a {x: 1}\nfuzz_b: &b {y: [1, 2]}\nfuzz_m:\n  <<: [*a, *b]\n  z: 3\n", kind
    if kind == "merge_scalar":
        return "fuzz_s: &s 5\nfuzz_m:\n  <<: *s\n", kind
    if kind == "small_bomb":
        return ('fz0: &a0 ["l","l","l","l"]\nfz1: &a1 [*a0,*a0,*a0,*a0]\nfz2: &a2 [*a1,*a1,*a1,*a1]\n'
                "fz3: [*a2,*a2,*a2,*a2]\n"), kind
    if kind == "alias_key":
        return "fuzz_k: &k {a: 1}\n? *k\n: v\n", kind
    if kind == "self_merge":
        return "fuzz_m: &m\n  <<: *m\n", kind
    if kind == "undefined_alias":
        return "fuzz_u: *nope\n", kind
    return "fuzz_x: &x 1\nfuzz_y: &x 2\nfuzz_z: *x\n", kind


def yaml_mutation(rng: random.Random, data: bytes, huge_size: int) -> tuple[bytes | Huge, str]:
    """One mutation of a valid YAML document: line-level, scalar-level, anchors/aliases, bytes."""
    text = data.decode()
    lines = text.splitlines()
    r = rng.random()
    if r < 0.1 or not lines:
        return byte_mutation(rng, data, huge_size)
    kv_lines = [i for i, line in enumerate(lines) if _KV.match(line)]
    if r < 0.45 and kv_lines:
        i = rng.choice(kv_lines)
        m = _KV.match(lines[i])
        assert m is not None
        value = _pick(rng, YAML_POOL)
        if "\n" in value:
            indent = " " * (len(m.group(1)) + 2)
            value = value.replace("\n", "\n" + indent)
        lines[i] = f"{m.group(1)}{m.group(2)}: {value}"
        return ("\n".join(lines) + "\n").encode(), f"line {i + 1}: {m.group(2).strip()}: {excerpt(value.encode(), 60)}"
    if r < 0.62:
        i = rng.randrange(len(lines))
        op = rng.choice(["drop", "dup", "swap", "tab", "control", "unknown_key", "dedent", "indent", "comment",
                         "doc_marker", "directive", "shuffle"])
        desc = f"{op} line {i + 1}"
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            desc = f"swap lines {i + 1} and {j + 1}"
        elif op == "tab":
            lines[i] = re.sub(r"^ +", "\t", lines[i]) if lines[i].startswith(" ") else "\t" + lines[i]
        elif op == "control":
            c = rng.choice(CONTROL)
            pos = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:pos] + c + lines[i][pos:]
            desc += f" ({c!r} at column {pos})"
        elif op == "unknown_key":
            indent = re.match(r"\s*", lines[i]).group(0)  # type: ignore[union-attr]
            lines.insert(i + 1, f"{indent}fuzz_unknown_key: 1")
        elif op == "dedent":
            lines[i] = lines[i].lstrip()
        elif op == "indent":
            lines[i] = "   " + lines[i]
        elif op == "comment":
            lines[i] = "# " + lines[i]
        elif op == "doc_marker":
            lines.insert(i, "---")
        elif op == "directive":
            lines.insert(0, rng.choice(["%YAML 1.1", "%YAML 2.0", "%TAG ! tag:x,2000:", "--- !!str"]))
        elif op == "shuffle":
            j = min(len(lines), i + rng.randint(2, 5))
            block = lines[i:j]
            rng.shuffle(block)
            lines[i:j] = block
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"), desc
    if r < 0.8:
        block, kind = _yaml_anchor_block(rng)
        if kv_lines and rng.random() < 0.5 and kind in ("recursive_list", "recursive_map"):
            # put the recursive node where a real value is, so the loader's caller meets it
            i = rng.choice(kv_lines)
            m = _KV.match(lines[i])
            assert m is not None
            value = "&r [*r]" if kind == "recursive_list" else "&r {k: *r}"
            lines[i] = f"{m.group(1)}{m.group(2)}: {value}"
            return ("\n".join(lines) + "\n").encode(), f"line {i + 1}: {m.group(2).strip()}: {value}"
        if rng.random() < 0.5:
            return (block + text).encode(), f"{kind} block prepended"
        return (text + ("" if text.endswith("\n") else "\n") + block).encode(), f"{kind} block appended"
    if r < 0.9 and kv_lines:
        # anchor a real value and alias it somewhere else / merge it
        i = rng.choice(kv_lines)
        m = _KV.match(lines[i])
        assert m is not None
        j = rng.choice(kv_lines)
        mj = _KV.match(lines[j])
        assert mj is not None
        if not m.group(4).strip():
            return ("\n".join(lines) + "\n").encode(), "no-op"
        lines[i] = f"{m.group(1)}{m.group(2)}: &fz {m.group(4)}"
        alias = rng.choice(["*fz", "{<<: *fz}", "[*fz, *fz]", "{<<: [*fz, *fz]}"])
        if j != i:
            lines[j] = f"{mj.group(1)}{mj.group(2)}: {alias}"
        return ("\n".join(lines) + "\n").encode(), f"line {i + 1} anchored, line {j + 1} = {alias}"
    # the whole document replaced by something of another type
    doc = rng.choice(["[]", "[1, 2]", "42", "null", '"a string"', "{}", "- a\n- b", "a: b: c", "? [a]\n: 1",
                      "---\na: 1\n---\nb: 2", "!!binary aGVsbG8=", "&a [*a]"])
    return (doc + "\n").encode(), f"document replaced by {doc!r}"


def config_mutation(rng: random.Random, data: bytes) -> tuple[bytes | Huge, str]:
    """lepton.yml: the YAML mutations, plus semantic ones aimed at names and known keys."""
    from lepton_ci.limits import CONFIG_MAX_BYTES

    r = rng.random()
    text = data.decode()
    if r < 0.15:
        name = rng.choice(['"digits\\n"', '"toy\\u0000"', '"Toy"', '""', '"-toy"', '"' + "a" * 200 + '"', "[toy]",
                           "{a: 1}", "1", "true", '"to/y"', '"../x"', '"t\\toy"', '"toy "', "toy\u2028"])
        return text.replace("name: toy", f"name: {name}", 1).encode("utf-8", "surrogatepass"), f"model.name: {name}"
    if r < 0.25:
        extra = rng.choice([
            "registry: s3://bucket\n", "registry: file://\n", "registry: file:///nonexistent/x\n", "registry: 5\n",
            "registry: \"file://\\n\"\n", "steps: [train, nope]\n", "steps: train\n", "steps: []\n",
            "deploy:\n  target: mars\n", "deploy:\n  alias: Latest\n", "tag:\n  aliases: [latest]\n",
            "tag:\n  aliases: \"candidate\\n\"\n", "tag:\n  require_gate: maybe\n", "signing:\n  public_key: nope.pem\n",
            "gate:\n  baseline: git:\n", "gate:\n  first_run: maybe\n", "unknown_top: 1\n", "framework: nope\n",
            "model_file: ../../etc/passwd\n", "train:\n  timeout: -1\n", "gate: []\n", "version: 2\n",
        ])
        return (text + extra).encode(), f"appended {extra.strip()!r}"
    if r < 0.35:
        rule = rng.choice([
            "    - metric: eval.accuracy\n      min: .nan\n", "    - metric: eval.accuracy\n      max: 1e999\n",
            "    - metric: \"\"\n      min: 0\n", "    - metric: [a]\n      min: 0\n",
            "    - metric: eval.accuracy\n      direction: sideways\n      min: 0\n",
            "    - metric: eval.accuracy\n      max_drop_pct: \"5%\"\n", "    - {}\n", "    - null\n", "    - 5\n",
            "    - metric: eval.accuracy\n      min: " + "9" * 400 + "\n",
            "    - metric: eval.accuracy\n      max_drop: -.inf\n", "    - metric: \"a\\nb\"\n      min: 0\n",
            "    - metric: eval.accuracy\n      min: 0\n      min: 1\n",
        ])
        return (text + rule).encode(), f"gate rule appended {rule.strip()!r}"
    return yaml_mutation(rng, data, CONFIG_MAX_BYTES)


def metrics_yaml_mutation(rng: random.Random, data: bytes) -> tuple[bytes | Huge, str]:
    from lepton_ci.limits import METRICS_MAX_BYTES

    return yaml_mutation(rng, data, METRICS_MAX_BYTES)


# --- TOML ----------------------------------------------------------------------------------------------

_TOML_KV = re.compile(r"^(\s*[A-Za-z0-9_.\"-]+\s*)=(.*)$")


def toml_mutation(rng: random.Random, data: bytes) -> tuple[bytes | Huge, str]:
    from lepton_ci.limits import METRICS_MAX_BYTES

    lines = data.decode().splitlines()
    r = rng.random()
    if r < 0.15 or not lines:
        return byte_mutation(rng, data, METRICS_MAX_BYTES)
    kv = [i for i, line in enumerate(lines) if _TOML_KV.match(line)]
    if r < 0.65 and kv:
        i = rng.choice(kv)
        m = _TOML_KV.match(lines[i])
        assert m is not None
        value = _pick(rng, TOML_POOL)
        lines[i] = f"{m.group(1)}= {value}"
        return ("\n".join(lines) + "\n").encode(), f"line {i + 1}: {m.group(1).strip()} = {excerpt(value.encode(), 60)}"
    i = rng.randrange(len(lines))
    op = rng.choice(["drop", "dup", "swap", "dup_table", "unknown", "dotted_clash", "control", "array_table"])
    if op == "drop":
        del lines[i]
    elif op == "dup":
        lines.insert(i, lines[i])
    elif op == "swap":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "dup_table":
        lines += ["[toml]", "extra = 1"]
    elif op == "unknown":
        lines.insert(0, 'fuzz = "x"')
    elif op == "dotted_clash":
        lines.insert(0, '"toml.auc" = 0.5')
    elif op == "control":
        pos = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:pos] + rng.choice(CONTROL) + lines[i][pos:]
    elif op == "array_table":
        lines += ["[[runs]]", "acc = 0.5", "[[runs]]", "acc = nan"]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"), f"toml {op} at line {i + 1}"


# --- picking a mutator by file name --------------------------------------------------------------------

def mutate_file(rng: random.Random, rel: str, data: bytes) -> tuple[bytes | Huge, str]:
    from lepton_ci.limits import METRICS_MAX_BYTES, RECORD_MAX_BYTES

    name = rel.rsplit("/", 1)[-1]
    if name in ("lepton.yml",):
        return config_mutation(rng, data)
    if name.endswith((".yaml", ".yml")):
        return metrics_yaml_mutation(rng, data)
    if name.endswith(".toml"):
        return toml_mutation(rng, data)
    if name.endswith(".jsonl"):
        return jsonl_mutation(rng, data, RECORD_MAX_BYTES)
    if name.endswith(".json"):
        limit = METRICS_MAX_BYTES if name.startswith("metrics") else RECORD_MAX_BYTES
        return json_mutation(rng, data, limit)
    return byte_mutation(rng, data, RECORD_MAX_BYTES)


def write_mutation(path: Path, content: bytes | Huge) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    if isinstance(content, Huge):
        with open(path, "wb") as f:
            f.write(content.prefix)
            f.truncate(content.size)
    else:
        path.write_bytes(content)


def describe(content: bytes | Huge) -> str:
    if isinstance(content, Huge):
        return f"<sparse file, {content.size} bytes, starts with {content.prefix!r}>"
    return excerpt(content)


# --- restoring a project between cases -----------------------------------------------------------------

class Snapshot:
    """The files and directories under `root` (except .git), restorable after a case changed them."""

    def __init__(self, root: Path, skip: tuple[str, ...] = (".git",)) -> None:
        self.root = root
        self.skip = skip
        self.files: dict[str, tuple[int, int, bytes, int]] = {}
        self.dirs: set[str] = set()
        for rel, is_dir in self._walk():
            p = root / rel
            if is_dir:
                self.dirs.add(rel)
            else:
                st = p.stat()
                self.files[rel] = (st.st_size, st.st_mtime_ns, p.read_bytes(), st.st_mode)

    def _walk(self) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d not in self.skip]
            for d in dirnames:
                out.append((os.path.normpath(os.path.join(rel_dir, d)), True))
            for f in filenames:
                out.append((os.path.normpath(os.path.join(rel_dir, f)), False))
        return out

    def restore(self) -> None:
        seen_dirs = []
        for rel, is_dir in self._walk():
            p = self.root / rel
            if is_dir:
                if p.is_symlink():
                    p.unlink()
                elif rel not in self.dirs:
                    seen_dirs.append(rel)
                continue
            kept = self.files.get(rel)
            if kept is None:
                p.unlink()
                continue
            try:
                st = p.lstat()
                same = st.st_size == kept[0] and st.st_mtime_ns == kept[1] and not p.is_symlink()
            except OSError:
                same = False
            if not same:
                self._write(rel, kept)
        import shutil

        for rel in sorted(seen_dirs, key=len, reverse=True):
            shutil.rmtree(self.root / rel, ignore_errors=True)
        for rel in sorted(self.dirs, key=len):
            (self.root / rel).mkdir(exist_ok=True)
        for rel, kept in self.files.items():
            if not (self.root / rel).exists():
                self._write(rel, kept)

    def _write(self, rel: str, kept: tuple[int, int, bytes, int]) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            if p.is_dir() and not p.is_symlink():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
        p.write_bytes(kept[2])
        os.chmod(p, kept[3] & 0o7777)
        os.utime(p, ns=(kept[1], kept[1]))


Mutator = Callable[[random.Random, str, bytes], tuple[bytes | Huge, str]]
