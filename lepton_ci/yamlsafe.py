"""The one YAML loader of lepton-ci: safe tags only, alias expansion bounded, two resolvers.

Why bounded: YAML aliases make a document a graph. Nine levels of anchors that each repeat the one
below ten times ("billion laughs") fit in 475 bytes and expand to a billion nodes; an anchor that
contains its own alias (`a: &a [*a]`) expands forever. PyYAML builds Python objects without looking,
so lepton-ci once grew past 22 GB validating such a lepton.yml and hung on such a metrics file. Here a
document is composed to nodes first (the C composer when PyYAML has it; composing never expands an
alias), then `check_graph` walks the node graph once, memoizing each node's expanded size and height,
and refuses a cycle, more than `MAX_NODES` nodes after expansion, or nesting deeper than `MAX_DEPTH`,
before any Python object is built. The walk is linear in the number of distinct nodes, so a bomb is
refused in milliseconds and without memory growth.

Why two resolvers (which plain strings become numbers, booleans or null):

* Metrics files and dvc.yaml use YAML 1.2 core-schema rules, the way DVC reads them (ruamel.yaml in
  1.2 mode): `1e-3`, `1e15` and `6.02e23` are floats (PyYAML's YAML 1.1 resolver leaves them strings,
  and the metric silently disappeared); only `true`/`false` (three spellings each) are booleans, so
  `yes`, `no`, `on`, `off`, `y`, `n` stay strings and keys such as `on` and `off` cannot collide as
  `True`/`False`; `0o17` is octal and `017` is decimal 17; `0x` and `0b` are hexadecimal and binary;
  `.nan`, `.inf`, `-.inf` are recognised (and then skipped by the metrics parser, with a note);
  underscores are allowed inside numbers as ruamel allows them. Timestamps are left as strings (no
  metric is a date).
* lepton.yml keeps PyYAML's YAML 1.1 rules, so every existing config keeps its meaning (`require_gate:
  yes` is still true), with one addition where 1.2 is clearly right: a number with an exponent and no
  dot (`1e-3`, `1.0e5`) is a float, not a string. Nobody writes `max_drop: 1e-3` meaning text, and as
  text it failed validation with a confusing "must be a number" message.

Merge keys (`<<: *a`, `<<: [*a, *b]`) follow the merge-key spec in both: own keys override merged ones,
and among merged mappings an earlier one in the list overrides a later one. PyYAML 6.0.4's own merge
tells keys apart by the identity of their Python strings, so which mapping won depended on string
interning (single-letter keys one way, longer keys the other); `_flatten_mapping` compares keys by tag
and value instead.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from lepton_ci.errors import UserError

MAX_NODES = 1_000_000
"""Nodes after alias expansion. A 16 MiB metrics file of plain values is far below this."""

MAX_DEPTH = 100
"""Nesting levels. Real metrics and configs nest fewer than ten; deeper nesting also risks Python's
recursion limit in the code that walks the data."""


class YamlError(UserError):
    """Malformed YAML, or YAML over a limit. `problem` is the message without location; `line` is
    1-based (None when unknown) so lepton.yml errors can say `file:line`."""

    def __init__(self, problem: str, *, where: str | None, line: int | None) -> None:
        super().__init__(problem, where=where)
        self.problem = problem
        self.line = line


class YamlLimitError(YamlError):
    """A document whose aliases expand too far, loop, or nest too deeply: well-formed but refused."""


# --- the node-graph guard ------------------------------------------------------------------------------


def check_graph(root: Any, source: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> int:
    """Refuse a node graph that is cyclic, expands past `max_nodes`, or nests past `max_depth`.

    Iterative depth-first walk. A node reached again through an alias reuses its memoized size and
    height, so the work is linear in distinct nodes however far the aliases would expand; a node met
    again while it is still on the walk's path is a recursive alias. Returns the expanded node count."""
    import yaml

    scalar, mapping = yaml.ScalarNode, yaml.MappingNode

    def children(node: Any) -> list[Any]:
        if type(node) is mapping or isinstance(node, mapping):
            return [item for pair in node.value for item in pair]
        return list(node.value)

    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    if isinstance(root, scalar):
        return 1
    on_path = {id(root)}
    # frame: [node, children, next index, expanded size so far, tallest child]
    stack: list[list[Any]] = [[root, children(root), 0, 1, 0]]
    while stack:
        frame = stack[-1]
        kids = frame[1]
        i = frame[2]
        if i < len(kids):
            frame[2] = i + 1
            child = kids[i]
            if type(child) is scalar:
                frame[3] += 1
                if frame[4] < 1:
                    frame[4] = 1
                continue
            cid = id(child)
            if cid in sizes:
                frame[3] += sizes[cid]
                if frame[4] < heights[cid]:
                    frame[4] = heights[cid]
                continue
            if cid in on_path:
                line = child.start_mark.line + 1
                raise YamlLimitError(
                    f"recursive alias: the node anchored at line {line} contains an alias to itself",
                    where=source,
                    line=line,
                )
            if len(stack) >= max_depth:
                line = child.start_mark.line + 1
                raise YamlLimitError(
                    f"nested more than {max_depth} levels deep (at line {line})", where=source, line=line
                )
            on_path.add(cid)
            stack.append([child, children(child), 0, 1, 0])
            continue
        stack.pop()
        node = frame[0]
        on_path.discard(id(node))
        size, height = frame[3], frame[4] + 1
        if size > max_nodes:
            line = node.start_mark.line + 1
            raise YamlLimitError(
                f"aliases expand to more than {max_nodes:,} nodes (the node at line {line}); refusing a YAML bomb",
                where=source,
                line=line,
            )
        sizes[id(node)] = size
        heights[id(node)] = height
        if stack:
            parent = stack[-1]
            parent[3] += size
            if parent[4] < height:
                parent[4] = height
    return sizes[id(root)]


# --- loader classes --------------------------------------------------------------------------------------

_FLOAT_EXPONENT_NO_DOT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")

_YAML12 = [
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    (
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?0b[01_]+|[-+]?0o[0-7_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?[0-9][0-9_]*)$"),
        list("-+0123456789"),
    ),
    (
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    ),
    ("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"]),
]


def _key_id(node: Any) -> tuple[Any, ...]:
    import yaml

    return (node.tag, node.value) if isinstance(node, yaml.ScalarNode) else ("node", id(node))


def _flatten_mapping(self: Any, node: Any) -> None:
    """Resolve `<<` merge keys of one mapping node in place: merged pairs first (the first mapping to
    give a key wins), then the node's own pairs, which the dict construction lets win over all."""
    import yaml

    merged: list[tuple[Any, Any]] = []
    own: list[tuple[Any, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    has_merge = False
    for key_node, value_node in node.value:
        if key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.tag == "tag:yaml.org,2002:value":
                key_node.tag = "tag:yaml.org,2002:str"
            own.append((key_node, value_node))
            continue
        has_merge = True
        if isinstance(value_node, yaml.MappingNode):
            sources = [value_node]
        elif isinstance(value_node, yaml.SequenceNode):
            sources = value_node.value
        else:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"expected a mapping or list of mappings for merging, but found {value_node.id}",
                value_node.start_mark,
            )
        for sub in sources:
            if not isinstance(sub, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"expected a mapping for merging, but found {sub.id}",
                    sub.start_mark,
                )
            self.flatten_mapping(sub)
            for pair in sub.value:
                key = _key_id(pair[0])
                if key not in seen:
                    seen.add(key)
                    merged.append(pair)
    if has_merge:
        node.value = merged + own


def _construct_int12(loader: Any, node: Any) -> int:
    """YAML 1.2 integers: `0o` octal, `0x` hex, `0b` binary, and a leading 0 alone means decimal."""
    text = loader.construct_scalar(node).replace("_", "")
    sign = -1 if text[0] == "-" else 1
    if text[0] in "+-":
        text = text[1:]
    base = {"0b": 2, "0o": 8, "0x": 16}.get(text[:2], 10)
    return sign * int(text[2:] if base != 10 else text, base)


@cache
def loader_class(yaml12: bool) -> type:
    """The safe loader (C-accelerated when available) with the 1.2 resolver or the extended 1.1 one."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    name = "LeptonYaml12Loader" if yaml12 else "LeptonYaml11Loader"
    cls: Any = type(name, (base,), {"flatten_mapping": _flatten_mapping})
    if yaml12:
        cls.yaml_implicit_resolvers = {}
        for tag, regexp, first in _YAML12:
            cls.add_implicit_resolver(tag, regexp, first)
        cls.add_constructor("tag:yaml.org,2002:int", _construct_int12)
    else:
        cls.yaml_implicit_resolvers = {k: list(v) for k, v in base.yaml_implicit_resolvers.items()}
        cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_EXPONENT_NO_DOT, list("-+0123456789"))
    return cls


def problem_of(exc: Exception) -> tuple[str, int | None]:
    """One line and a 1-based line number out of a PyYAML error."""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return problem, (mark.line + 1 if mark is not None else None)


def compose(loader: Any, source: str) -> Any:
    """The document's root node (None for an empty document), checked by `check_graph`.

    Raises YamlError for malformed YAML and YamlLimitError for a refused graph."""
    import yaml

    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        problem, line = problem_of(exc)
        raise YamlError(problem, where=source, line=line) from None
    if node is not None:
        check_graph(node, source)
    return node


def load(text: str | bytes, source: str, *, yaml12: bool = True) -> Any:
    """Load one YAML document into plain Python data, safely and within the limits above.

    `yaml12=True` for metrics files and dvc.yaml, False for lepton.yml-flavoured values."""
    import yaml

    loader = loader_class(yaml12)(text)
    try:
        node = compose(loader, source)
        if node is None:
            return None
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            problem, line = problem_of(exc)
            raise YamlError(problem, where=source, line=line) from None
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            # `!!int abc`, `!!timestamp x`, a 5,000-digit integer: PyYAML's constructors fail with plain
            # Python errors, which are still the document's fault.
            raise YamlError(
                f"bad value: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", where=source, line=None
            ) from None
        except RecursionError:
            raise YamlLimitError("nested too deeply", where=source, line=None) from None
    finally:
        loader.dispose()
