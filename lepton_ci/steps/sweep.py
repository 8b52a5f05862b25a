"""The sweep step: a grid search fanned out as a CI matrix, and the best of its runs brought back.

`plan` turns `sweep.grid` (or a seeded random sample of it) into the combinations, one training job each:
GitHub's `strategy.matrix` as JSON for `fromJSON`, or a GitLab child pipeline with `parallel: matrix`. The
CI runs `lepton-ci train --param ...` once per combination and keeps each job's records as artifacts.

`collect` reads those run.json files, ranks them by `sweep.objective`, and puts the winner where the next
steps look for a candidate: its run.json at `train.output` (with the leaderboard inside, under `sweep`) and
its artifact files at their recorded paths, each checked against the digest in its record first. So gate,
tag and report need no sweep mode: they see one run, the best, and the report shows the leaderboard.

Combinations are decoded from their index in the grid (mixed radix), so a sample of a grid with billions of
points costs only the sample; the order is the grid's own (first key slowest) in both modes.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lepton_ci.config import Config
from lepton_ci.errors import UserError
from lepton_ci.fsutil import atomic_write_json, sha256_file, short_repr
from lepton_ci.records import RunRecord, safe_relative_path

# Jobs one matrix may hold: GitHub Actions refuses a matrix of more than 256 jobs; GitLab's parallel:matrix
# is limited to 200 jobs.
MATRIX_LIMITS = {"github": 256, "gitlab": 200}
RESERVED = ("params", "sweep_index")
SWEEP_JSON = ".lepton/sweep.json"
TRAIN_FILES_TAR = "train-files.tar"  # what the GitLab train job packs next to run.json (gitlab-templates/)


@dataclass
class Plan:
    """The combinations to train, with the size of the grid they came from."""

    keys: list[str]
    combinations: list[dict[str, Any]]
    grid_size: int
    sampled: bool
    seed: int | None = None

    def entries(self) -> list[dict[str, Any]]:
        """One matrix entry per combination: its index, its `--param` words, and each value by name."""
        return [{"sweep_index": i, "params": param_words(c), **c} for i, c in enumerate(self.combinations)]


def param_word(key: str, value: Any) -> str:
    """`KEY=VALUE` as `lepton-ci train --param` reads it back (a YAML scalar): the same type and value."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        text = str(value)
        from lepton_ci.yamlsafe import YamlError, load

        try:
            same = load(text, "sweep value", yaml12=False) == text
        except YamlError:
            same = False
        if not same:
            text = json.dumps(text)  # a double-quoted YAML scalar: "1" stays a string, "null" too
    return f"{key}={text}"


def param_words(combination: dict[str, Any]) -> str:
    return " ".join(param_word(k, v) for k, v in combination.items())


def _section(config: Config) -> dict[str, Any]:
    sweep = config.section("sweep")
    if not sweep:
        raise UserError("no sweep: section in lepton.yml (sweep.grid and sweep.objective)", where=config.where())
    return sweep


def plan(config: Config, ci: str = "github") -> Plan:
    """The combinations to train. An empty grid, a value the CI cannot pass as one word, or more jobs than
    the CI's matrix takes (or `sweep.max_jobs`) is a UserError naming the key."""
    sweep = _section(config)
    grid: dict[str, list[Any]] = sweep.get("grid") or {}
    if not grid:
        raise UserError("sweep.grid is empty: give at least one parameter with values", where=config.where("sweep"))
    for key, values in grid.items():
        if not values:
            raise UserError(f"sweep.grid.{key} has no values", where=config.where("sweep", "grid", key))
        if key in RESERVED or not str(key).replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise UserError(
                f"sweep.grid key {short_repr(key)} must be a plain name (letters, digits, _ - .), not {RESERVED}",
                where=config.where("sweep", "grid", key),
            )
        for i, value in enumerate(values):
            if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
                raise UserError(
                    f"sweep.grid.{key}[{i}] {short_repr(value)} must be a non-empty word without spaces "
                    "(each job gets its values as --param KEY=VALUE words)",
                    where=config.where("sweep", "grid", key, i),
                )
        if len(set(map(json.dumps, values))) != len(values):
            raise UserError(f"sweep.grid.{key} lists a value twice", where=config.where("sweep", "grid", key))
    keys = list(grid)
    size = math.prod(len(grid[k]) for k in keys)
    sample: int | None = sweep.get("sample")
    seed = int(sweep.get("seed", 0))
    sampled = sample is not None and sample < size
    jobs = sample if sample is not None and sampled else size
    limit = min(MATRIX_LIMITS[ci], int(sweep.get("max_jobs", MATRIX_LIMITS[ci])))
    if jobs > limit:
        what = f"sweep.sample {sample}" if sampled else f"sweep.grid has {size:,} combinations, which"
        raise UserError(
            f"{what} exceeds the limit of {limit} jobs ({ci}'s matrix takes at most {MATRIX_LIMITS[ci]}"
            f"{'; sweep.max_jobs is ' + str(sweep['max_jobs']) if 'max_jobs' in sweep else ''}): "
            "set sweep.sample or shrink the grid",
            where=config.where("sweep", "sample" if sampled else "grid"),
        )
    indices = sorted(random.Random(seed).sample(range(size), jobs)) if sampled else range(size)
    combos = [_decode(grid, keys, i) for i in indices]
    return Plan(keys, combos, size, sampled, seed if sampled else None)


def _decode(grid: dict[str, list[Any]], keys: list[str], index: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in reversed(keys):
        index, digit = divmod(index, len(grid[key]))
        out[key] = grid[key][digit]
    return {k: out[k] for k in keys}


def github_matrix(p: Plan) -> dict[str, Any]:
    """`strategy.matrix` for `fromJSON(...)`: only `include`, one entry per combination."""
    return {"include": p.entries()}


def gitlab_child_pipeline(
    p: Plan,
    *,
    include: list[dict[str, Any]],
    stage: str = "train",
    then: list[str] | None = None,
    directory: str = ".",
    train_tags: list[str] | None = None,
    train_image: str | None = None,
) -> dict[str, Any]:
    """A child pipeline: one `parallel: matrix` train job per combination (the classic `.lepton-setup` for the
    install), a collect job that needs them all, and the `then` steps (gate, tag, report) after it, since a
    parent pipeline cannot read its child's artifacts. Each train job keeps its records and files under
    `.lepton/sweep/<job id>/` so the artifacts of the jobs do not overwrite each other. `train_tags` and
    `train_image` send the train jobs (only: collecting and gating need no GPU) to GPU runners."""
    base = ".lepton/sweep"
    train_job: dict[str, Any] = {
        "extends": ".lepton-setup",
        "stage": stage,
        "variables": {"LEPTON_CI_DIRECTORY": directory},
        "parallel": {"matrix": [{"LEPTON_CI_TRAIN_PARAMS": param_words(c)} for c in p.combinations]},
        "cache": {"policy": "pull-push"},
        "script": [
            "set -f; set --\n"
            'for lepton_ci_param in ${LEPTON_CI_TRAIN_PARAMS:-}; do set -- "$@" --param "$lepton_ci_param"; done\n'
            "set +f\n"
            f'lepton_ci_out="{base}/${{CI_JOB_ID:-1}}"\n'
            'lepton-ci train --output "$lepton_ci_out/run.json" "$@"\n'
            'python -c \'import json, sys; print("\\n".join(a["path"] for a in '
            'json.load(open(sys.argv[1])).get("artifacts") or []))\' "$lepton_ci_out/run.json"'
            ' > "$lepton_ci_out/train-files.txt"\n'
            f'tar -cf "$lepton_ci_out/{TRAIN_FILES_TAR}" -T "$lepton_ci_out/train-files.txt"\n'
        ],
        "artifacts": {"when": "always", "expire_in": "1 week", "paths": [_joined(directory, base) + "/"]},
    }
    if train_tags:
        train_job["tags"] = list(dict.fromkeys(train_tags))
    if train_image:
        train_job["image"] = train_image
    collect_job: dict[str, Any] = {
        "extends": ".lepton-setup",
        "stage": stage,
        "variables": {"LEPTON_CI_DIRECTORY": directory},
        "needs": ["lepton-sweep-train"],
        "script": [
            f"lepton-ci sweep collect {base}\n"
            'python -c \'import json; print("\\n".join(a["path"] for a in '
            'json.load(open(".lepton/run.json")).get("artifacts") or []))\' > .lepton/train-files.txt\n'
            f"tar -cf .lepton/{TRAIN_FILES_TAR} -T .lepton/train-files.txt\n"
        ],
        "artifacts": {"when": "always", "expire_in": "1 week", "paths": [_joined(directory, ".lepton") + "/"]},
    }
    # Rules on every job: a job without any runs only in branch and tag pipelines (GitLab's default
    # `only:`), and a child of a merge request pipeline is neither, so GitLab would create no jobs and fail
    # the trigger ("downstream pipeline can not be created").
    always = [{"when": "on_success"}]
    train_job["rules"] = collect_job["rules"] = always
    pipeline: dict[str, Any] = {"include": include} if include else {}
    pipeline["workflow"] = {"rules": [{"when": "always"}]}
    stages = [stage] + [s for s in (then or []) if s != stage]
    pipeline["stages"] = stages
    pipeline["lepton-sweep-train"] = train_job
    pipeline["lepton-sweep-collect"] = collect_job
    previous = ["lepton-sweep-collect"]  # each step reads the records of all before it (run.json, gate.json, ...)
    for step in then or []:
        pipeline[f"lepton-{step}"] = {
            "extends": f".lepton-{step}",
            "stage": step,
            "needs": list(previous),
            "rules": always,
        }
        previous.append(f"lepton-{step}")
    return pipeline


def _joined(directory: str, path: str) -> str:
    return path if directory in ("", ".") else f"{directory.rstrip('/')}/{path}"


# ---- collect ---------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One run of the sweep, as found in the jobs' artifacts."""

    record: RunRecord
    path: Path
    value: float | None = None
    rank: int | None = None


@dataclass
class SweepResult:
    metric: str
    direction: str
    entries: list[Entry]
    best: Entry
    keys: list[str] = field(default_factory=list)

    def leaderboard(self) -> list[dict[str, Any]]:
        return [
            {
                "rank": e.rank,
                "run_id": e.record.run_id,
                "params": {k: e.record.params.get(k) for k in self.keys},
                "value": e.value,
                "status": e.record.exit.get("status"),
            }
            for e in self.entries
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": {"metric": self.metric, "direction": self.direction},
            "best": self.best.record.run_id,
            "runs": len(self.entries),
            "params": self.keys,
            "leaderboard": self.leaderboard(),
        }


def find_runs(dirs: list[Path]) -> list[Entry]:
    """Every run.json under `dirs` (the jobs' downloaded artifacts), one entry per run id."""
    seen: dict[str, Entry] = {}
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"sweep collect: {d} is not a directory (expected the training jobs' artifacts)")
        for path in sorted(d.rglob("run.json")):
            if "runs" in path.parts[len(d.parts) :]:
                continue  # .lepton/runs/<id>/run.json: a copy of the job's own .lepton/run.json
            record = RunRecord.read(path)
            if record.run_id not in seen:
                seen[record.run_id] = Entry(record, path)
    if not seen:
        raise UserError(f"sweep collect: no run.json under {', '.join(map(str, dirs))}")
    return list(seen.values())


def rank(config: Config, entries: list[Entry]) -> SweepResult:
    """Rank the runs by the objective; failed runs are listed last, unranked. A successful run without the
    objective's metric is an error naming its file: comparing it as missing would pick the wrong winner."""
    sweep = _section(config)
    metric = sweep["objective"]["metric"]
    direction = sweep["objective"].get("direction", "higher")
    for e in entries:
        if e.record.model != config.model_name:
            raise UserError(
                f"{e.path} is a run of model {short_repr(e.record.model)}, but lepton.yml names {config.model_name!r}"
            )
        if not e.record.succeeded:
            continue
        value = e.record.metrics.get(metric)
        if value is None:
            raise UserError(
                f"{e.path} has no metric {metric!r} (sweep.objective.metric); metrics: "
                f"{', '.join(sorted(e.record.metrics)[:10]) or 'none'}",
                where=config.where("sweep", "objective", "metric"),
            )
        e.value = float(value)
    ok = [e for e in entries if e.value is not None]
    if not ok:
        raise UserError(f"sweep collect: none of the {len(entries)} run(s) succeeded; nothing to pick")
    sign = -1.0 if direction == "higher" else 1.0
    ok.sort(key=lambda e: (sign * (e.value or 0.0), e.record.run_id))
    for i, e in enumerate(ok, 1):
        e.rank = i
    failed = [e for e in entries if e.value is None]
    keys = list((sweep.get("grid") or {}).keys())
    return SweepResult(metric, direction, ok + failed, ok[0], keys)


def _files_root(entry: Entry, top: Path) -> tuple[Path | None, Path | None]:
    """(directory the run's artifact paths are relative to, or the tar the GitLab job packed them in)."""
    arts = entry.record.artifacts
    tar = entry.path.parent / TRAIN_FILES_TAR
    if tar.is_file():
        return None, tar
    for d in [entry.path.parent, *entry.path.parent.parents]:
        if all((d / a["path"]).is_file() for a in arts):
            return d, None
        if d == top:
            break
    return None, None


def install_best(config: Config, result: SweepResult, top: list[Path], output: Path | None = None) -> Path:
    """Put the best run where gate and tag look: its files at their recorded paths (digests checked before
    anything is written) and its run.json, with the leaderboard, at `output` (default train.output)."""
    best = result.best
    for art in best.record.artifacts:
        if not safe_relative_path(art["path"]):
            raise UserError(f"{best.path}: artifact path {short_repr(art['path'])} is not inside the project")
    anchor = next((d for d in top if best.path.is_relative_to(d)), best.path.parent)
    root, tar = _files_root(best, anchor)
    with tempfile.TemporaryDirectory(prefix="sweep-", dir=_scratch(config)) as tmp:
        if tar is not None:
            root = Path(tmp)
            _unpack(tar, best, root)
        elif root is None and best.record.artifacts:
            raise UserError(
                f"the files of the best run {best.record.run_id} are not next to {best.path} "
                f"(looked for {best.record.artifacts[0]['path']}); upload them with the run's records"
            )
        for art in best.record.artifacts:
            assert root is not None
            if sha256_file(root / art["path"]) != art["sha256"]:
                raise UserError(
                    f"artifact {art['path']} of run {best.record.run_id} does not match its recorded sha256"
                )
        for art in best.record.artifacts:
            assert root is not None
            src, target = root / art["path"], config.root / art["path"]
            if src.resolve() != target.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
    record = best.record
    record.extra["sweep"] = result.to_dict()
    out = output or config.run_path
    record.write(out)
    atomic_write_json(config.resolve(SWEEP_JSON), {"kind": "sweep", "schema_version": 1, **result.to_dict()})
    return out


def _scratch(config: Config) -> Path:
    path = config.root / ".lepton"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unpack(tar: Path, entry: Entry, dest: Path) -> None:
    """The run's artifacts out of the tar the GitLab job packed, by their recorded names only (nothing else in
    the archive is extracted, so a crafted member name cannot write outside `dest`)."""
    with tarfile.open(tar) as tf:
        for art in entry.record.artifacts:
            try:
                member = tf.extractfile(art["path"])
            except KeyError:
                member = None
            if member is None:
                raise UserError(f"{tar} does not hold {art['path']}, an artifact of run {entry.record.run_id}")
            target = dest / art["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            with member, open(target, "wb") as f:
                shutil.copyfileobj(member, f)


def collect(config: Config, dirs: list[Path], output: Path | None = None) -> SweepResult:
    """Gather the runs under `dirs`, rank them, and install the best one (see the module docstring)."""
    result = rank(config, find_runs(dirs))
    install_best(config, result, dirs, output)
    return result


def report_section(run: RunRecord | None, precision: int) -> dict[str, Any] | None:
    """The report's view of a sweep (the leaderboard collect put into the best run's record), or None."""
    from lepton_ci.charts import param_chart
    from lepton_ci.metrics import fmt_number

    sweep = run.extra.get("sweep") if run is not None else None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("leaderboard"), list):
        return None
    objective: dict[str, Any] = sweep["objective"] if isinstance(sweep.get("objective"), dict) else {}
    metric, direction = str(objective.get("metric", "")), str(objective.get("direction", "higher"))
    keys = [str(k) for k in sweep.get("params") or [] if isinstance(k, str)]
    rows: list[dict[str, Any]] = []
    points: list[tuple[dict[str, Any], float]] = []
    for row in sweep["leaderboard"]:
        if not isinstance(row, dict):
            continue
        params: dict[str, Any] = row["params"] if isinstance(row.get("params"), dict) else {}
        value = row.get("value")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        rows.append(
            {
                "rank": row.get("rank") or "—",
                "run_id": str(row.get("run_id", "")),
                "params": [str(params.get(k, "")).replace("|", "\\|") for k in keys],
                "value": fmt_number(value, precision) if number else str(row.get("status", "—")),
                "best": row.get("run_id") == sweep.get("best"),
            }
        )
        if isinstance(value, (int, float)) and number:
            points.append((params, float(value)))
    charts = [
        chart
        for k in keys
        if (chart := param_chart(k, metric, [(p.get(k), v) for p, v in points], direction)) is not None
    ]
    return {"metric": metric, "direction": direction, "names": keys, "rows": rows, "charts": charts}
