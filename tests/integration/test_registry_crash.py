"""Crash consistency of the file registry: tag processes killed with SIGKILL at random moments never
leave a half-written version, a broken history or a corrupt blob; at worst orphan blobs and temporary
files, which `check` reports as warnings and `gc` removes."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from lepton_ci.registry import open_registry

PUSH = """
import sys
from pathlib import Path
from lepton_ci.registry import open_registry
reg = open_registry("file://" + sys.argv[1], Path("."), create=True)
files = [(p.name, p) for p in sorted(Path(sys.argv[2]).iterdir())]
reg.push("m", files, {"run": {"run_id": sys.argv[3]}}, aliases=["candidate", "production"])
"""


def test_sigkill_during_tag_never_corrupts(tmp_path: Path) -> None:
    art = tmp_path / "art"
    art.mkdir()
    rng = random.Random(7)
    registry = tmp_path / "reg"
    # How long one whole push takes on this machine (process start included): the kills are spread
    # over that span, so they land in every phase however fast or slow the machine is.
    (art / "weights.bin").write_bytes(rng.randbytes(8 * 1024 * 1024))
    (art / "config.json").write_text('{"round": "calibration"}')
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", PUSH, str(registry), str(art), "run-calibration"], check=True)
    span = time.monotonic() - started
    completed = 1
    for i in range(16):
        # fresh content each round so every push has real blob work to do
        (art / "weights.bin").write_bytes(rng.randbytes(8 * 1024 * 1024))
        (art / "config.json").write_text(f'{{"round": {i}}}')
        proc = subprocess.Popen([sys.executable, "-c", PUSH, str(registry), str(art), f"run-{i}"])
        time.sleep(rng.uniform(0.3, 1.0) * span)
        proc.kill()
        if proc.wait() == 0:
            completed += 1
    assert completed < 17, "every push finished before its kill: the test exercised no crash"
    reg = open_registry(f"file://{registry}", tmp_path)
    problems = reg.check()
    assert [p for p in problems if p.severity == "error"] == []
    versions = reg.versions("m")
    numbers = [v.version for v in versions]
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) >= completed
    for v in versions:
        assert v.compute_digest() == v.digest
    aliases = reg.aliases("m")
    if numbers:
        assert set(aliases.values()) <= set(numbers)
    # whatever the kills left behind is reported, with its size, and gc takes it away
    leftovers = reg.storage.temp_files()
    orphans = [b for b in reg.storage.blobs() if b.key not in {a["sha256"] for v in versions for a in v.artifacts}]
    warned = {p.where for p in problems if p.severity == "warning"}
    if leftovers:
        [w] = [p for p in problems if p.where == "temporary files"]
        assert f"{len(leftovers)} file(s)" in w.message
    assert warned == ({"temporary files"} if leftovers else set()) | {f"blob {b.key[:12]}" for b in orphans}
    kept = reg.gc(apply=False)  # all of it is younger than the default minimum age
    assert {i.action for i in kept} <= {"kept: younger than 60 min (a running tag may own it)"}
    assert len(reg.storage.temp_files()) == len(leftovers)
    removed = reg.gc(apply=True, min_age_s=0)
    assert len(removed) == len(leftovers) + len(orphans) and all(i.action == "deleted" for i in removed)
    assert reg.check() == []
    for v in versions:
        reg.fetch("m", v.version, tmp_path / "fetched" / str(v.version))
    # the registry still takes writes after all those crashes
    mv = reg.push("m", [("weights.bin", art / "weights.bin")], {"run": {"run_id": "after"}}, aliases=["production"]).version
    assert mv.version == len(numbers) + 1 and reg.aliases("m")["production"] == mv.version
    assert [p for p in reg.check() if p.severity == "error"] == []
