"""lepton_ci/yamlsafe.py: the bounded YAML loader, the YAML 1.2 resolver for metrics, and the CLI refusing
alias bombs and recursive aliases in one line, quickly, in little memory (each of these once grew past
22 GB or hung)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lepton_ci.errors import UserError
from lepton_ci.yamlsafe import MAX_NODES, YamlError, YamlLimitError, check_graph, load, loader_class

ROOT = Path(__file__).resolve().parents[2]


def billion_laughs() -> str:
    """Nine levels of anchors, each repeating the one below ten times: 10**9 nodes in under 500 bytes."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    return "\n".join(lines) + "\n"


BOMB = billion_laughs()
RECURSIVE = ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n", "x:\n  - &n [1, [2, *n]]\n"]


def test_bomb_is_small():
    assert len(BOMB) < 500


# --- the graph guard ------------------------------------------------------------------------------------


def test_billion_laughs_is_refused_fast_naming_file_and_line():
    start = time.monotonic()
    with pytest.raises(YamlLimitError) as info:
        load(BOMB, "m.yaml")
    assert time.monotonic() - start < 0.5
    assert isinstance(info.value, UserError)
    assert info.value.where == "m.yaml"
    assert f"more than {MAX_NODES:,} nodes" in info.value.message
    assert 1 <= info.value.line <= 10


@pytest.mark.parametrize("text", RECURSIVE)
def test_recursive_alias_is_refused(text):
    with pytest.raises(YamlLimitError) as info:
        load(text, "m.yaml")
    assert "recursive alias" in info.value.message
    assert info.value.line is not None


def test_shared_aliases_below_the_limit_are_fine():
    # A DAG: the same anchor used many times is allowed while the expansion stays under the limit.
    text = "base: &b {lr: 0.1, depth: 3}\n" + "".join(f"run{i}: *b\n" for i in range(200))
    data = load(text, "m.yaml")
    assert data["run199"] == {"lr": 0.1, "depth": 3}


def test_expanded_size_is_counted_exactly():
    import yaml

    node = loader_class(True)("a: &a [1, 2]\nb: [*a, *a]\n").get_single_node()
    # root map(1) + keys a,b (2) + seq a(1+2) + seq b(1) + two aliases of seq a (2*3)
    assert check_graph(node, "x") == 1 + 2 + 3 + 1 + 6
    with pytest.raises(YamlLimitError):
        check_graph(node, "x", max_nodes=10)
    assert isinstance(node, yaml.MappingNode)


def test_deep_nesting_is_refused():
    with pytest.raises(YamlLimitError, match="nested more than"):
        load("a: " + "[" * 150 + "]" * 150 + "\n", "m.yaml")


def test_malformed_yaml_is_a_yaml_error_with_a_line():
    with pytest.raises(YamlError) as info:
        load("a: 1\n b: 2\n", "m.yaml")
    assert not isinstance(info.value, YamlLimitError)
    assert info.value.line == 2


def test_python_tags_are_refused():
    with pytest.raises(YamlError):
        load("a: !!python/object/apply:os.system [echo hi]\n", "m.yaml")


# --- the two resolvers ------------------------------------------------------------------------------------


def test_yaml12_scalars():
    data = load("a: 1e-3\nb: 1e15\nc: 6.02e23\nd: 0o17\ne: 017\nf: 0x1f\ng: yes\nh: no\ni: on\nj: off\n"
                "k: y\nl: n\nm: .nan\nn: -.inf\no: .inf\np: true\nq: FALSE\nr: ~\ns: null\nt: 1_000\nu: 2001-12-14\n",
                "m.yaml")
    assert data["a"] == 0.001 and data["b"] == 1e15 and data["c"] == 6.02e23
    assert (data["d"], data["e"], data["f"], data["t"]) == (15, 17, 31, 1000)
    assert [data[k] for k in "ghijkl"] == ["yes", "no", "on", "off", "y", "n"]
    assert data["m"] != data["m"] and data["n"] == float("-inf") and data["o"] == float("inf")
    assert (data["p"], data["q"], data["r"], data["s"]) == (True, False, None, None)
    assert data["u"] == "2001-12-14"


def test_yaml12_keys_do_not_collide_as_booleans():
    assert load("on: 1\nyes: 2\ntrue: 3\n", "m.yaml") == {"on": 1, "yes": 2, True: 3}


def test_merge_key_order_follows_the_spec():
    text = "a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\nc:\n  <<: [*a, *b]\n  w: 0\nd:\n  x: 9\n  <<: *a\n"
    data = load(text, "m.yaml")
    assert data["c"] == {"x": 1, "y": 1, "z": 2, "w": 0}
    assert data["d"] == {"x": 9, "y": 1}
    # Keys longer than one letter, inline and aliased, in both flavours: PyYAML 6.0.4 let the later
    # mapping win here, because it compared keys by the identity of their Python strings.
    text = ("a: &a {rate: 1}\nb: &b {rate: 2, seed: 2}\nc: {<<: [*a, *b]}\n"
            "d:\n  <<: [{rate: 3, depth: 3}, {rate: 4, seed: 4}]\n  depth: 5\n")
    for yaml12 in (True, False):
        data = load(text, "m.yaml", yaml12=yaml12)
        assert data["c"] == {"rate": 1, "seed": 2}
        assert data["d"] == {"rate": 3, "depth": 5, "seed": 4}


def test_config_flavour_keeps_yaml11_booleans_and_adds_exponent_floats():
    data = load("a: yes\nb: on\nc: 1e-3\nd: 1.0e5\ne: 017\nf: 2.5\n", "lepton.yml", yaml12=False)
    assert data == {"a": True, "b": True, "c": 0.001, "d": 100000.0, "e": 15, "f": 2.5}


# --- through the CLI, under a memory cap ------------------------------------------------------------------


def run_capped(args: list[str], cwd: Path, *, timeout: float = 30) -> tuple[int, str, float, int]:
    """Run `lepton-ci ARGS` with a 1 GiB address-space cap; (exit code, stderr, seconds, peak RSS in MB).

    Peak RSS is measured by a small wrapper process that starts the CLI and reads its rusage: the kernel
    carries a process's peak RSS across fork and exec, so a CLI started straight from this (large) pytest
    process would report pytest's size. A timer kills the wrapper and the CLI if they run away."""
    wrapper = (
        "import os, resource, subprocess, sys\n"
        "cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "p = subprocess.Popen([sys.executable, '-m', 'lepton_ci.cli', *sys.argv[2:]], preexec_fn=cap)\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", wrapper, rss.name, *args], cwd=cwd, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, 9))
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        elapsed = time.monotonic() - start
        err.seek(0)
        peak_kb = int(rss.read() or 0)
        return proc.returncode, err.read().decode(errors="replace"), elapsed, peak_kb // 1024


def assert_one_line_refusal(code: int, err: str, elapsed: float, rss_mb: int, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert elapsed < 2.0, elapsed
    assert rss_mb < 100, rss_mb


def test_config_validate_refuses_billion_laughs(tmp_path: Path) -> None:
    (tmp_path / "lepton.yml").write_text("model: {name: m}\n" + BOMB)
    code, err, elapsed, rss = run_capped(["config", "validate"], tmp_path)
    assert_one_line_refusal(code, err, elapsed, rss, "lepton.yml:", "nodes")


def test_config_validate_refuses_recursive_alias_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "lepton.yml").write_text("model: {name: m}\ntrain:\n  command: 'true'\n  params: &p {x: *p}\n")
    code, err, elapsed, rss = run_capped(["config", "validate"], tmp_path)
    assert_one_line_refusal(code, err, elapsed, rss, "lepton.yml:4:", "recursive alias")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True)


@pytest.mark.parametrize("doc, needle", [(BOMB, "nodes"), ("a: &a [*a]\n", "recursive alias")])
@pytest.mark.parametrize("side", ["workspace", "HEAD"])
def test_metrics_diff_refuses_bombs_at_either_side(tmp_path: Path, doc: str, needle: str, side: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "lepton.yml").write_text("model: {name: m}\ntrain:\n  command: 'true'\n  metrics: [m.yaml]\n")
    (repo / "m.yaml").write_text(doc if side == "HEAD" else "acc: 0.5\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")
    (repo / "m.yaml").write_text(doc if side == "workspace" else "acc: 0.5\n")
    code, err, elapsed, rss = run_capped(["metrics", "diff"], repo)
    assert_one_line_refusal(code, err, elapsed, rss, "m.yaml", needle)
