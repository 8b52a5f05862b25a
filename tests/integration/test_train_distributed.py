"""`train.distributed`: a real two-process DDP run under torchrun on the gloo backend (CPU).

The training script is a tiny real DistributedDataParallel regression (y = 3x + 2): the ranks rendezvous,
all-reduce gradients and the loss, and each logs metrics through lepton_ci.log_metrics. The run's metrics must
be rank 0's, every rank's log must be kept and named in run.json, and a rank that dies must fail the step
with its own exit code and last lines, in one line on stderr and exit 1.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from tests.e2e.helpers import assert_one_line_error, cli, require

DDP_SCRIPT = """\
import os, sys
import torch, torch.distributed as dist
import lepton_ci
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.rand(64, 1, generator=torch.Generator().manual_seed(rank))
y = 3 * x + 2
if os.environ.get("LEPTON_PARAM_FAIL_RANK") == str(rank):
    print(f"rank {rank}: out of patience", flush=True)
    os._exit(7)
for _ in range(20):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
total = torch.tensor([loss.item()])
dist.all_reduce(total)
lepton_ci.log_metrics({"loss": total.item() / world, "rank": rank, "world": world})
w = model.module.weight.detach().clone()
dist.all_reduce(w)
assert torch.allclose(w / world, model.module.weight.detach()), "DDP kept the ranks' weights in step"
print(f"rank {rank} done", flush=True)
if rank == 0:
    torch.save(model.module.state_dict(), "model.pt")
dist.destroy_process_group()
"""


def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(DDP_SCRIPT)
    (tmp_path / "lepton.yml").write_text(
        textwrap.dedent(
            """\
            model: {{name: ddp-linear}}
            train:
              command: {python} train.py
              artifacts: [model.pt]
              timeout: 300
              distributed: {{nproc_per_node: 2}}
            """
        ).format(python=sys.executable)
    )
    return tmp_path


def test_two_ranks_on_gloo_rank_zero_metrics_and_every_log(tmp_path: Path) -> None:
    require("torch")
    root = project(tmp_path)
    result = cli("train", "-q", cwd=root)
    assert result.code == 0, result
    run = json.loads((root / ".lepton" / "run.json").read_text())
    assert run["metrics"]["rank"] == 0 and run["metrics"]["world"] == 2
    assert run["metrics"]["loss"] > 0
    ranks = {r["rank"]: root / r["log"] for r in run["ranks"]}
    assert sorted(ranks) == [0, 1]
    for rank, log in ranks.items():
        assert f"rank {rank} done" in log.read_text()
    # rank 1's own log_metrics went beside its log, not into the run's metrics
    logged = list((root / ".lepton" / "runs" / run["run_id"] / "ranks" / "rank-1").glob("*.json*"))
    assert logged, "rank 1's logged metrics are kept in its own directory"
    assert [a["path"] for a in run["artifacts"]] == ["model.pt"]


def test_a_rank_that_dies_fails_the_step_with_its_code_and_last_lines(tmp_path: Path) -> None:
    require("torch")
    root = project(tmp_path)
    result = cli("train", "-q", "-p", "fail_rank=1", cwd=root)
    assert result.code == 1, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "rank 1 exited with code 7" in lines[0] and "rank 1: out of patience" in lines[0], lines[0]
    assert "ranks/rank-1.log" in lines[0]
    run = json.loads((root / ".lepton" / "run.json").read_text())
    assert run["exit"]["status"] == "failed" and run["exit"]["code"] == 7 and run["exit"]["rank"] == 1


def test_multi_node_without_an_endpoint_is_one_line(tmp_path: Path) -> None:
    require("torch")
    (tmp_path / "lepton.yml").write_text(
        "model: {name: ddp}\ntrain:\n  command: 'true'\n  distributed: {nproc_per_node: 2, nnodes: 2}\n"
    )
    result = cli("train", cwd=tmp_path)
    assert_one_line_error(result, 2, "rdzv_endpoint", "lepton.yml:")


STUBBORN = """\
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a rank that ignores torchrun's stop
with open(f"pid-{os.environ['RANK']}", "w") as f:
    f.write(str(os.getpid()))
time.sleep(300)
"""


def test_a_timeout_leaves_no_rank_behind(tmp_path: Path) -> None:
    """torchrun is stopped at train.timeout; ranks that ignore SIGTERM are killed with their process groups,
    so nothing of the run outlives the step (a later step of the job holds the signing key)."""
    import time

    require("torch")
    (tmp_path / "train.py").write_text(STUBBORN)
    (tmp_path / "lepton.yml").write_text(
        f"model: {{name: ddp}}\ntrain:\n  command: {sys.executable} train.py\n  timeout: 8\n"
        "  distributed: {nproc_per_node: 2}\n"
    )
    result = cli("train", "-q", cwd=tmp_path, timeout=120)
    assert_one_line_error(result, 1, "timed out after 8s")
    pids = [int((tmp_path / f"pid-{rank}").read_text()) for rank in (0, 1)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not alive, f"ranks still running: {alive}"
