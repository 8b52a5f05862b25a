"""Keep the docs true: every `lepton-ci ...` line in a code block parses against the real click commands,
every command has a linked page, every option and every lepton.yml key is documented, every complete
lepton.yml example validates, and relative links between the markdown files resolve.

Checked without running anything: the commands are parsed by click exactly as `lepton-ci` would parse
them, with `resilient_parsing` to walk the command tree and a strict parse of each level to catch bad
option values, missing arguments and unknown options.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

from lepton_ci.cli import COMMANDS, cli
from lepton_ci.config import load_schema, parse_yaml_with_lines, validate

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# Command -> its page under docs/; the default is docs/<command>.md.
PAGES = {"metrics": "metrics-diff.md", "config": "config.md"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ";;", ">", ">>", "<", "<<", "<&", ">&", "&>", "(", ")"}


def markdown_files() -> list[Path]:
    return [p for p in [README, *sorted(DOCS.glob("*.md"))] if p.is_file()]


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the first content line
    lang: str
    lines: list[str]

    def where(self, offset: int = 0) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line + offset}"


def code_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    current: Block | None = None
    marker = ""
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(text)
        if current is None:
            if m:
                marker = m.group(1)
                current = Block(path, number + 1, m.group(2).lower(), [])
            continue
        if m and text.strip().startswith(marker[0] * len(marker)) and not m.group(2):
            blocks.append(current)
            current = None
            continue
        current.lines.append(text)
    assert current is None, f"{path.relative_to(ROOT)}:{current.line - 1}: code block is never closed"
    return blocks


def command_lines() -> list[tuple[str, str]]:
    """(file:line, command text) for every code-block line that runs lepton-ci, continuations joined."""
    found = []
    for path in markdown_files():
        for block in code_blocks(path):
            i = 0
            while i < len(block.lines):
                start = i
                text = block.lines[i].strip()
                while text.endswith("\\") and i + 1 < len(block.lines):
                    i += 1
                    text = text[:-1] + " " + block.lines[i].strip()
                i += 1
                if text.startswith("$ "):
                    text = text[2:].lstrip()
                if text == "lepton-ci" or text.startswith("lepton-ci "):
                    found.append((block.where(start), text))
    return found


def split_command(text: str) -> list[str]:
    """The arguments lepton-ci receives: shell words up to the first pipe, redirection or separator."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    args: list[str] = []
    for word in words[1:]:
        if word in SHELL_OPERATORS or set(word) <= set("|&;<>()"):
            if word and word[0] in "<>" and args and args[-1].isdigit():
                args.pop()  # the fd of a redirection such as 2>/dev/null
            break
        args.append(word)
    return args


def _rest(ctx: click.Context) -> list[str]:
    """What a group left for its subcommand (protected args first; click 8.2+ keeps them private)."""
    protected = ctx.__dict__.get("_protected_args", ctx.__dict__.get("protected_args", []))
    return [*protected, *ctx.args]


def check_command(args: list[str]) -> str | None:
    """None when click accepts `lepton-ci ARGS`, else why not."""
    cmd: click.Command = cli
    name = "lepton-ci"
    parent: click.Context | None = None
    while True:
        # Walk: with ignore_unknown_options an unknown option stays in the leftovers instead of vanishing.
        ctx = cmd.make_context(name, list(args), parent=parent, resilient_parsing=True, ignore_unknown_options=True)
        rest = _rest(ctx)
        # Check: parse this level strictly too (bad values, missing arguments); --help and -V just exit.
        strict = None
        try:
            cmd.make_context(name, list(args), parent=parent)
        except click.exceptions.Exit:
            return None  # an eager option (--help, --version) ends the command here, as it would for real
        except click.UsageError as exc:
            strict = f"{ctx.command_path}: {exc.format_message()}"
        if not isinstance(cmd, click.Group):
            if rest:
                return f"{ctx.command_path}: unknown option or extra argument(s): {' '.join(rest)}"
            return strict
        if not rest:
            if cmd.invoke_without_command:
                return strict
            return f"{ctx.command_path}: a subcommand is needed (one of: {', '.join(cmd.list_commands(ctx))})"
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            kind = "option" if rest[0].startswith("-") else "command"
            return f"{ctx.command_path}: no such {kind} {rest[0]!r}"
        if strict:
            return strict
        cmd, name, parent, args = sub, rest[0], ctx, rest[1:]


COMMAND_LINES = command_lines()


def test_docs_show_commands() -> None:
    assert README.is_file() and (DOCS / "index.md").is_file()
    assert len(COMMAND_LINES) > 40, "expected the docs to show lepton-ci commands in code blocks"


@pytest.mark.parametrize("where,text", COMMAND_LINES, ids=[w for w, _ in COMMAND_LINES])
def test_documented_command_parses(where: str, text: str) -> None:
    try:
        args = split_command(text)
    except ValueError as exc:
        pytest.fail(f"{where}: cannot split {text!r}: {exc}")
    problem = check_command(args)
    assert problem is None, f"{where}: {text}\n  {problem}"


@pytest.mark.parametrize("text,problem", [
    ("lepton-ci gate --bogus", "unknown option"),
    ("lepton-ci --bogus gate", "no such option"),
    ("lepton-ci nosuch", "no such command"),
    ("lepton-ci registry --bogus list", "no such option"),
    ("lepton-ci registry list --bogus", "unknown option"),
    ("lepton-ci deploy --bogus status", "no such option"),
    ("lepton-ci metrics diff --precision 99", "99"),
    ("lepton-ci gate --run", "requires an argument"),
    ("lepton-ci registry promote 1", "ALIAS"),
    ("lepton-ci metrics", "subcommand"),
    ("lepton-ci metrics diff HEAD workspace extra", "extra"),
])
def test_checker_rejects_what_lepton_ci_rejects(text: str, problem: str) -> None:
    found = check_command(split_command(text))
    assert found is not None and problem in found, found


@pytest.mark.parametrize("text", [
    "lepton-ci --help",
    "lepton-ci -V",
    "lepton-ci -c lepton.yml --debug gate --json -b none",
    "lepton-ci deploy",
    "lepton-ci deploy --json status",
    "lepton-ci registry -m digits show v1 --json | head",
    "lepton-ci report -o report.md 2>/dev/null && echo ok",
    "lepton-ci train -p C=0.5 --timeout 60  # comment",
])
def test_checker_accepts_valid_commands(text: str) -> None:
    assert check_command(split_command(text)) is None


def _page(command: str) -> str:
    return PAGES.get(command, f"{command}.md")


def test_every_command_has_a_page_linked_from_the_index() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for command in COMMANDS:
        page = _page(command)
        assert (DOCS / page).is_file(), f"`lepton-ci {command}` has no page docs/{page}"
        assert re.search(rf"\]\((\./)?{re.escape(page)}(#[^)]*)?\)", index), f"docs/index.md does not link {page}"


def _all_options(cmd: click.Command, ctx: click.Context) -> list[tuple[str, str]]:
    out = []
    for param in cmd.params:
        if isinstance(param, click.Option) and param.name != "help":
            out += [(ctx.command_path, opt) for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--")]
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            out += _all_options(sub, click.Context(sub, info_name=name, parent=ctx))
    return out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_is_documented_on_its_page(command: str) -> None:
    root = click.Context(cli, info_name="lepton-ci")
    cmd = cli.get_command(root, command)
    text = (DOCS / _page(command)).read_text(encoding="utf-8")
    missing = [f"{path} {opt}" for path, opt in _all_options(cmd, click.Context(cmd, info_name=command, parent=root))
               if f"`{opt}" not in text]
    assert not missing, f"docs/{_page(command)} does not mention: {', '.join(missing)}"


def test_global_options_are_documented() -> None:
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    for param in cli.params:
        for opt in param.opts:
            if opt.startswith("--") and opt != "--help":
                assert f"`{opt}" in text, f"docs/index.md does not mention {opt}"


def _schema_keys() -> list[str]:
    """Every key of lepton.yml: top level, `section.key`, and the keys of a gate rule."""
    schema = load_schema()
    keys = []
    for name, spec in schema["properties"].items():
        keys.append(name)
        for sub in (spec.get("properties") or {}):
            keys.append(f"{name}.{sub}")
    keys += list(schema["$defs"]["rule"]["properties"])
    return keys


def test_every_config_key_is_documented() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for name in load_schema()["properties"]:
        assert name in text, f"docs/config.md does not mention the top-level key {name!r}"
    missing = [k for k in _schema_keys() if f"`{k}`" not in text]
    assert not missing, f"docs/config.md does not document: {', '.join(missing)}"


def test_complete_config_examples_validate() -> None:
    """A yaml block with a top-level `model:` is a whole lepton.yml: it must pass the schema."""
    checked = 0
    for path in markdown_files():
        for block in code_blocks(path):
            if block.lang not in ("yaml", "yml"):
                continue
            text = "\n".join(block.lines)
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                pytest.fail(f"{block.where()}: not valid YAML: {exc}")
            if isinstance(data, dict) and "model" in data:
                data, lines = parse_yaml_with_lines(text, block.where())
                validate(data, lines, str(block.path.relative_to(ROOT)))
                checked += 1
    assert checked >= 2


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_relative_links_resolve() -> None:
    broken = []
    for path in markdown_files():
        in_code = False
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if FENCE.match(text):
                in_code = not in_code
            if in_code:
                continue
            for target in LINK.findall(text):
                if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                    continue
                file = target.split("#", 1)[0]
                if not (path.parent / file).exists():
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
