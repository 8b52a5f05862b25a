"""lepton_ci/registry/local.py through lepton_ci.registry.open_registry: versions, aliases, history, check."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lepton_ci.errors import RegistryError
from lepton_ci.fsutil import sha256_bytes
from lepton_ci.registry import open_registry
from lepton_ci.registry.local import MARKER, event_digest

NAME = "digits"


def artifact(tmp_path: Path, content: bytes, rel: str = "model.bin") -> tuple[str, Path]:
    src = tmp_path / "src" / sha256_bytes(content)[:12] / rel
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(content)
    return rel, src


@pytest.fixture()
def reg_path(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture()
def reg(reg_path: Path, tmp_path: Path):
    return open_registry(f"file://{reg_path}", tmp_path, create=True)


def push_n(reg, tmp_path: Path, n: int, aliases=("production",)) -> list:
    return [reg.push(NAME, [artifact(tmp_path, f"weights {i}".encode())], {"run": {"run_id": f"r{i}"}},
                     aliases=list(aliases)).version for i in range(1, n + 1)]


def errors(problems):
    return [p for p in problems if p.severity == "error"]


def history_lines(reg_path: Path) -> list[dict]:
    return [json.loads(line) for line in (reg_path / "models" / NAME / "history.jsonl").read_text().splitlines()]


# --- opening --------------------------------------------------------------------------------------------


def test_push_creates_the_registry(reg_path, tmp_path):
    assert not reg_path.exists()
    reg = open_registry(f"file://{reg_path}", tmp_path, create=True)
    assert json.loads((reg_path / MARKER).read_text())["kind"] == "lepton-registry"
    result = reg.push(NAME, [artifact(tmp_path, b"w")], {})
    assert result.created and result.version.version == 1
    # A second open (without create) finds it.
    again = open_registry(f"file://{reg_path}", tmp_path)
    assert again.models() == [NAME]


def test_relative_url_is_relative_to_base_dir(tmp_path):
    reg = open_registry("file://.lepton/registry", tmp_path, create=True)
    reg.push(NAME, [artifact(tmp_path, b"w")], {})
    assert (tmp_path / ".lepton" / "registry" / MARKER).is_file()


def test_opening_a_missing_registry_without_create(reg_path, tmp_path):
    with pytest.raises(RegistryError) as info:
        open_registry(f"file://{reg_path}", tmp_path)
    assert "no registry at" in str(info.value) and str(reg_path) in str(info.value)
    assert not reg_path.exists()


@pytest.mark.parametrize("create", [False, True])
def test_a_directory_that_is_not_a_registry_is_refused_and_untouched(tmp_path, create):
    d = tmp_path / "project"
    (d / "src").mkdir(parents=True)
    (d / "README.md").write_text("mine")
    before = sorted(p.relative_to(d) for p in d.rglob("*"))
    with pytest.raises(RegistryError) as info:
        open_registry(f"file://{d}", tmp_path, create=create)
    assert "not a lepton-ci registry" in str(info.value)
    assert sorted(p.relative_to(d) for p in d.rglob("*")) == before
    assert (d / "README.md").read_text() == "mine"


def test_a_file_is_not_a_registry(tmp_path):
    f = tmp_path / "reg"
    f.write_text("x")
    with pytest.raises(RegistryError, match="not a lepton-ci registry"):
        open_registry(f"file://{f}", tmp_path, create=True)
    assert f.read_text() == "x"


def test_a_marker_of_another_kind_is_refused(tmp_path):
    d = tmp_path / "reg"
    d.mkdir()
    (d / MARKER).write_text('{"kind": "something-else"}')
    with pytest.raises(RegistryError, match="not a lepton-ci registry"):
        open_registry(f"file://{d}", tmp_path)


def test_unknown_scheme(tmp_path):
    with pytest.raises(RegistryError, match="not understood"):
        open_registry("s3://bucket/x", tmp_path)


# --- versions -----------------------------------------------------------------------------------------


def test_versions_are_numbered_and_digested(reg, tmp_path):
    v1, v2, v3 = push_n(reg, tmp_path, 3, aliases=())
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    assert [v.version for v in reg.versions(NAME)] == [1, 2, 3]
    for v in (v1, v2, v3):
        assert v.digest.startswith("sha256:") and v.digest == v.compute_digest()
        [art] = v.artifacts
        assert art["sha256"] == sha256_bytes(f"weights {v.version}".encode())
        assert art["size"] == len(f"weights {v.version}")
        assert art["path"] == "model.bin"
    assert len({v.digest for v in (v1, v2, v3)}) == 3
    assert v2.metadata == {"run": {"run_id": "r2"}}
    assert v1.created and v1.name == NAME


def test_get_by_number_v_name_alias_digest_prefix_and_latest(reg, tmp_path):
    v1, v2, v3 = push_n(reg, tmp_path, 3, aliases=())
    reg.move_alias(NAME, "staging", 2)
    assert reg.get(NAME, 1).digest == v1.digest
    assert reg.get(NAME, "2").digest == v2.digest
    assert reg.get(NAME, "v2").digest == v2.digest
    assert reg.get(NAME, "staging").version == 2
    assert reg.get(NAME, v3.digest).version == 3
    assert reg.get(NAME, v1.digest[:len("sha256:") + 12]).version == 1
    assert reg.get(NAME, "latest").version == 3


def test_ambiguous_digest_prefix_is_an_error(reg, tmp_path):
    push_n(reg, tmp_path, 3, aliases=())
    # "sha256:" is a prefix of every version's digest: picking one silently would be a guess.
    with pytest.raises(RegistryError):
        reg.get(NAME, "sha256:")


def test_unknown_version_alias_and_digest(reg, tmp_path):
    push_n(reg, tmp_path, 2)
    with pytest.raises(RegistryError) as info:
        reg.get(NAME, 9)
    assert str(info.value) == f"model {NAME!r} has no version 9 (versions: 1..2)"
    with pytest.raises(RegistryError) as info:
        reg.get(NAME, "v0")
    assert "no version 0" in str(info.value)
    with pytest.raises(RegistryError) as info:
        reg.get(NAME, "staging")
    assert "no alias 'staging'" in str(info.value) and "production" in str(info.value)
    with pytest.raises(RegistryError) as info:
        reg.get(NAME, "sha256:" + "0" * 64)
    assert "no version with digest" in str(info.value)
    with pytest.raises(RegistryError) as info:
        reg.get("other", "latest")
    assert "'other' has no versions" in str(info.value)


def test_idempotent_re_push(reg, tmp_path):
    files = [artifact(tmp_path, b"w1"), artifact(tmp_path, b"cfg", "config.json")]
    first = reg.push(NAME, files, {"run": {"run_id": "r1"}}, aliases=["candidate"])
    again = reg.push(NAME, list(reversed(files)), {"run": {"run_id": "r1"}}, aliases=["candidate"])
    assert first.created is True and again.created is False
    assert again.version.version == 1 and again.version.digest == first.version.digest
    assert again.aliases == []  # alias already there: no new history entry
    assert len(reg.history(NAME)) == 1
    assert [v.version for v in reg.versions(NAME)] == [1]
    # Same files with a different run record is a new version.
    other = reg.push(NAME, files, {"run": {"run_id": "r2"}})
    assert other.created and other.version.version == 2


def test_fetch_materialises_files(reg, tmp_path):
    files = [artifact(tmp_path, b"\x00weights\xff", "model.bin"), artifact(tmp_path, b"a b c", "vocab/words.txt")]
    reg.push(NAME, files, {})
    reg.push(NAME, [artifact(tmp_path, b"v2")], {})
    dest = reg.fetch(NAME, 1, tmp_path / "out")
    assert (dest / "model.bin").read_bytes() == b"\x00weights\xff"
    assert (dest / "vocab" / "words.txt").read_bytes() == b"a b c"
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == ["model.bin", "vocab/words.txt"]


def test_fetch_with_a_missing_blob_is_a_registry_error(reg, reg_path, tmp_path):
    v = reg.push(NAME, [artifact(tmp_path, b"w")], {}).version
    (reg_path / "blobs" / "sha256" / v.artifacts[0]["sha256"]).unlink()
    with pytest.raises(RegistryError, match="missing"):
        reg.fetch(NAME, 1, tmp_path / "out")


def test_same_content_is_stored_once(reg, reg_path, tmp_path):
    reg.push(NAME, [artifact(tmp_path, b"same", "a.bin")], {"n": 1})
    reg.push(NAME, [artifact(tmp_path, b"same", "a.bin")], {"n": 2})
    assert len(list((reg_path / "blobs" / "sha256").iterdir())) == 1


# --- aliases and history ----------------------------------------------------------------------------


def test_alias_moves_are_recorded_with_from_to_and_a_hash_chain(reg, reg_path, tmp_path):
    push_n(reg, tmp_path, 3)  # production -> 1, 2, 3
    reg.move_alias(NAME, "staging", 2, reason="qa")
    assert reg.aliases(NAME) == {"production": 3, "staging": 2}
    events = reg.history(NAME, "production")
    assert [(e.from_, e.to, e.action) for e in events] == [(None, 1, "move"), (1, 2, "move"), (2, 3, "move")]
    raw = history_lines(reg_path)
    assert [e["seq"] for e in raw] == [1, 2, 3, 4]
    assert raw[0]["prev"] is None
    for before, after in zip(raw, raw[1:]):
        assert after["prev"] == event_digest(before)
    assert raw[3]["alias"] == "staging" and raw[3]["from"] is None and raw[3]["to"] == 2 and raw[3]["reason"] == "qa"
    assert errors(reg.check()) == []


def test_move_alias_to_a_missing_version(reg, tmp_path):
    push_n(reg, tmp_path, 1)
    with pytest.raises(RegistryError, match="no version 5"):
        reg.move_alias(NAME, "production", 5)
    assert reg.aliases(NAME) == {"production": 1}


def test_rollback_walks_back(reg, tmp_path):
    push_n(reg, tmp_path, 3)
    e = reg.rollback(NAME, "production", reason="bad model")
    assert (e.action, e.from_, e.to, e.reason) == ("rollback", 3, 2, "bad model")
    assert reg.get(NAME, "production").version == 2
    e = reg.rollback(NAME, "production")
    assert (e.from_, e.to) == (2, 1)
    assert reg.aliases(NAME)["production"] == 1
    with pytest.raises(RegistryError, match="no previous target"):
        reg.rollback(NAME, "production")
    assert reg.aliases(NAME)["production"] == 1
    assert [e.to for e in reg.history(NAME, "production")] == [1, 2, 3, 2, 1]
    assert errors(reg.check()) == []


def test_rollback_after_a_new_move_returns_to_the_target_before_it(reg, tmp_path):
    push_n(reg, tmp_path, 3)
    reg.rollback(NAME, "production")          # 3 -> 2
    reg.move_alias(NAME, "production", 3)     # 2 -> 3 again
    assert reg.rollback(NAME, "production").to == 2


def test_rollback_with_no_previous_target(reg, tmp_path):
    push_n(reg, tmp_path, 1)
    with pytest.raises(RegistryError) as info:
        reg.rollback(NAME, "production")
    assert "no previous target" in str(info.value)
    with pytest.raises(RegistryError) as info:
        reg.rollback(NAME, "staging")
    assert "no alias 'staging'" in str(info.value)
    assert len(reg.history(NAME)) == 1


# --- check ----------------------------------------------------------------------------------------------


@pytest.fixture()
def populated(reg, tmp_path):
    push_n(reg, tmp_path, 3)
    reg.move_alias(NAME, "staging", 1)
    assert reg.check() == []
    return reg


def test_check_is_clean_on_a_good_registry(populated):
    assert populated.check() == []


def test_check_reports_a_corrupted_blob(populated, reg_path):
    digest = populated.get(NAME, 2).artifacts[0]["sha256"]
    (reg_path / "blobs" / "sha256" / digest).write_bytes(b"bit rot")
    [p] = errors(populated.check())
    assert p.where == f"{NAME} v2" and "corrupt" in p.message and digest[:12] in p.message


def test_check_reports_a_deleted_blob(populated, reg_path):
    digest = populated.get(NAME, 3).artifacts[0]["sha256"]
    (reg_path / "blobs" / "sha256" / digest).unlink()
    [p] = errors(populated.check())
    assert p.where == f"{NAME} v3" and "missing" in p.message


def test_check_reports_an_edited_version_manifest(populated, reg_path):
    path = reg_path / "models" / NAME / "versions" / "1.json"
    data = json.loads(path.read_text())
    data["metadata"]["run"]["run_id"] = "forged"
    path.write_text(json.dumps(data))
    [p] = errors(populated.check())
    assert p.where == f"{NAME} v1" and "digest does not match" in p.message


def test_check_reports_an_edited_history_line(populated, reg_path):
    raw = history_lines(reg_path)
    raw[1]["to"] = 3  # rewrite where production pointed in the past
    (reg_path / "models" / NAME / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in raw))
    problems = errors(populated.check())
    assert problems and all("hash chain broken" in p.message for p in problems)
    assert [p.where for p in problems] == [f"{NAME} history #3"]


def test_check_reports_a_removed_history_line(populated, reg_path):
    raw = history_lines(reg_path)
    del raw[1]
    (reg_path / "models" / NAME / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in raw))
    problems = errors(populated.check())
    assert problems and all("hash chain broken" in p.message for p in problems)
    assert problems[0].where == f"{NAME} history #2"


def test_check_reports_an_unparseable_history(populated, reg_path):
    with (reg_path / "models" / NAME / "history.jsonl").open("a") as f:
        f.write("{half a line\n")
    [p] = errors(populated.check())
    assert p.where == f"{NAME} history" and "damaged" in p.message


def test_check_reports_an_alias_pointing_at_a_lost_version(populated, reg_path):
    (reg_path / "models" / NAME / "versions" / "1.json").unlink()
    problems = errors(populated.check())
    assert any("points at missing version 1" in p.message for p in problems)


def test_check_reports_an_orphan_blob_as_a_warning_only(populated, reg_path):
    orphan = sha256_bytes(b"left by an interrupted tag")
    (reg_path / "blobs" / "sha256" / orphan).write_bytes(b"left by an interrupted tag")
    problems = populated.check()
    assert errors(problems) == []
    [w] = problems
    assert w.severity == "warning" and w.where == f"blob {orphan[:12]}" and "not referenced" in w.message


# --- immutability and concurrency ------------------------------------------------------------------------


def test_version_files_are_never_rewritten(reg, reg_path, tmp_path):
    push_n(reg, tmp_path, 1)
    v1 = reg_path / "models" / NAME / "versions" / "1.json"
    before = (v1.read_bytes(), v1.stat().st_ino, v1.stat().st_mtime_ns)
    push_n(reg, tmp_path, 3)  # r1 again (idempotent), then r2, r3
    reg.move_alias(NAME, "staging", 1)
    reg.rollback(NAME, "production")
    assert (v1.read_bytes(), v1.stat().st_ino, v1.stat().st_mtime_ns) == before
    assert [v.version for v in reg.versions(NAME)] == [1, 2, 3]


PUSHER = """
import sys, time
from pathlib import Path
from lepton_ci.registry import open_registry
root, src, who, n, go = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
reg = open_registry("file://" + root, Path("."), create=True)
src.mkdir(parents=True, exist_ok=True)
(src / "ready").touch()
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:  # start both pushers at the same moment
    time.sleep(0.001)
for i in range(n):
    f = src / f"model-{i}.bin"
    f.write_bytes(f"{who} {i}".encode())
    r = reg.push("digits", [("model.bin", f)], {"run": {"run_id": f"{who}-{i}"}}, aliases=["candidate"])
    print(r.version.version, flush=True)
    time.sleep(0.02)  # let the other pusher in between (the lock is polled, not queued)
"""


def test_concurrent_pushes_from_two_processes(reg, reg_path, tmp_path):
    n = 12
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, str(reg_path), str(tmp_path / who), who, str(n), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]
    deadline = time.monotonic() + 30
    while not all((tmp_path / who / "ready").exists() for who in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    per_process = [[int(x) for x in out.split()] for out, _ in outs]
    assert all(len(got) == n for got in per_process)
    numbers = per_process[0] + per_process[1]
    assert sorted(numbers) == list(range(1, 2 * n + 1))  # distinct, no gaps, none lost
    versions = reg.versions(NAME)
    assert [v.version for v in versions] == list(range(1, 2 * n + 1))
    assert sorted(v.metadata["run"]["run_id"] for v in versions) == sorted(f"{w}-{i}" for w in "ab" for i in range(n))
    assert len(reg.history(NAME, "candidate")) == 2 * n
    assert reg.check() == []


def test_concurrent_pushes_from_two_threads(reg, reg_path, tmp_path):
    barrier = threading.Barrier(2)
    got: dict[str, list[int]] = {}
    failures: list[BaseException] = []

    def worker(who: str) -> None:
        try:
            r = open_registry(f"file://{reg_path}", tmp_path)  # its own instance, as another job would have
            barrier.wait()
            got[who] = [r.push(NAME, [artifact(tmp_path, f"{who}{i}".encode())], {"who": who, "i": i},
                               aliases=["candidate"]).version.version for i in range(5)]
        except BaseException as exc:  # surface in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(got["a"] + got["b"]) == list(range(1, 11))
    assert reg.check() == []


def test_concurrent_first_pushes_into_a_new_registry(tmp_path):
    # Two tag jobs running at once against a registry that does not exist yet must both succeed.
    for attempt in range(40):
        root = Path(tempfile.mkdtemp(dir=tmp_path)) / "reg"
        barrier = threading.Barrier(2)
        failures: list[BaseException] = []

        def worker(who: str) -> None:
            try:
                barrier.wait()
                r = open_registry(f"file://{root}", tmp_path, create=True)
                r.push(NAME, [artifact(tmp_path, who.encode())], {"who": who})
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in (f"a{attempt}", f"b{attempt}")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [], f"attempt {attempt}: {failures[0]}"
        reg = open_registry(f"file://{root}", tmp_path)
        assert [v.version for v in reg.versions(NAME)] == [1, 2]
