"""`train.image`: the training command inside a container, on the real Docker engine.

scripts/deps/40-docker.sh starts dockerd (no bridge: containers use the host network) and builds the base image
lepton-test/python:3.11 (Debian minbase with python3). The container gets the project mounted at its own path,
runs as the caller, sees only the run's variables, and its output, metrics and artifacts land in the record as
on the host. There is no GPU here, so a GPU request is checked for its one-line refusal (the DeviceRequest
itself is unit-tested in tests/unit/test_gpu.py).
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from tests.e2e.helpers import assert_one_line_error, cli
from tests.support.docker import BASE_IMAGE, require_docker

SCRIPT = """\
import json, os, sys
print("inside", os.getuid(), sys.version.split()[0], flush=True)
params = json.loads(os.environ["LEPTON_CI_PARAMS"])
assert "LEPTON_TEST_SECRET" not in os.environ, "a host variable leaked in"
assert os.environ.get("FROM_ENV") == "yes"
with open("metrics.json", "w") as f:
    json.dump({"loss": 1 / (1 + params["epochs"]), "in_container": int(os.path.exists("/.dockerenv"))}, f)
with open("model.txt", "w") as f:
    f.write("weights for %d epochs\\n" % params["epochs"])
sys.exit(int(os.environ.get("LEPTON_PARAM_EXIT", "0")))
"""


def project(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(SCRIPT)
    (root / "lepton.yml").write_text(
        textwrap.dedent(
            f"""\
            model: {{name: boxed}}
            train:
              image: {BASE_IMAGE}
              command: python3 train.py
              params: {{epochs: 3}}
              env: {{FROM_ENV: "yes"}}
              metrics: [metrics.json]
              artifacts: [model.txt]
              timeout: 120
            """
        )
        + extra
    )
    return root


def test_the_command_runs_in_the_image_and_its_files_are_recorded(tmp_path: Path) -> None:
    require_docker()
    root = project(tmp_path / "p")
    r = cli("train", cwd=root, env={"LEPTON_TEST_SECRET": "s3cr3t"}, timeout=300)
    assert r.code == 0, r
    assert f"inside {os.getuid()}" in r.out
    run = json.loads((root / ".lepton" / "run.json").read_text())
    assert run["metrics"] == {"loss": 0.25, "in_container": 1}
    assert [a["path"] for a in run["artifacts"]] == ["model.txt"]
    assert (root / "model.txt").stat().st_uid == os.getuid()
    log = (root / run["exit"]["log"]).read_text()
    assert "inside" in log


def test_a_failing_command_in_the_image_fails_the_step(tmp_path: Path) -> None:
    require_docker()
    root = project(tmp_path / "p")
    r = cli("train", "-q", "-p", "EXIT=4", cwd=root, timeout=300)
    assert_one_line_error(r, 1, "exited with code 4")
    run = json.loads((root / ".lepton" / "run.json").read_text())
    assert run["exit"]["code"] == 4 and run["exit"]["status"] == "failed"


def test_an_image_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    require_docker()
    root = project(tmp_path / "p")
    (root / "lepton.yml").write_text((root / "lepton.yml").read_text().replace(BASE_IMAGE, "lepton-test/nope:1"))
    assert_one_line_error(cli("train", cwd=root, timeout=120), 2, "lepton-test/nope:1", "not on this machine")


def test_gpus_asked_for_on_a_machine_without_one_is_one_line(tmp_path: Path) -> None:
    require_docker()
    root = project(tmp_path / "p")
    (root / "lepton.yml").write_text((root / "lepton.yml").read_text().replace("  timeout: 120\n", "  gpus: all\n"))
    r = cli("train", cwd=root, env={"PATH": "/usr/bin:/bin:/usr/sbin:/usr/local/bin"}, timeout=120)
    assert_one_line_error(r, 2, "train.gpus is 'all'", "no NVIDIA GPU")
