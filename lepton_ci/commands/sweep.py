"""`lepton-ci sweep plan` and `lepton-ci sweep collect`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lepton_ci.commands._common import config_from, echo_json, path_option


def _block_dumper() -> type:
    """A YAML dumper that writes multi-line strings (job scripts) as `|` blocks, as people write them."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return Dumper


@click.group("sweep")
def sweep_group() -> None:
    """Grid search as a CI matrix: plan the jobs, then collect their runs and keep the best."""


@sweep_group.command("plan")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["github", "gitlab", "json"]),
    default="github",
    show_default=True,
    help="github: strategy.matrix JSON for fromJSON; gitlab: a child pipeline (YAML); json: the plan itself.",
)
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="YAML",
    help="gitlab: an include entry of the child pipeline, as YAML or JSON "
    "(e.g. '{project: lepton/ci-templates, ref: 0.1.0, file: lepton.yml}'); repeatable.",
)
@click.option(
    "--then",
    "then",
    multiple=True,
    type=click.Choice(["gate", "tag", "report"]),
    help="gitlab: steps the child pipeline runs on the best run after collecting (repeatable, in order).",
)
@click.option(
    "--train-tag",
    "train_tags",
    multiple=True,
    metavar="TAG",
    help="gitlab: a runner tag of the train jobs, e.g. gpu (repeatable); collect and the --then steps keep theirs.",
)
@click.option("--train-image", metavar="IMAGE", help="gitlab: the container image of the train jobs, e.g. a CUDA one.")
@click.option("--directory", default=".", show_default=True, help="gitlab: directory holding lepton.yml.")
@path_option("-o", "--output", help="Write the plan to this file instead of stdout.")
@click.pass_context
def plan_cmd(
    ctx: click.Context,
    fmt: str,
    includes: tuple[str, ...],
    then: tuple[str, ...],
    train_tags: tuple[str, ...],
    train_image: str | None,
    directory: str,
    output: Path | None,
) -> None:
    """Print the sweep's jobs: one per combination of sweep.grid (or of its seeded sample)."""
    from lepton_ci.forge.outputs import emit
    from lepton_ci.steps import sweep

    config = config_from(ctx)
    plan = sweep.plan(config, "gitlab" if fmt == "gitlab" else "github")
    if fmt == "gitlab":
        import yaml

        from lepton_ci.errors import UserError
        from lepton_ci.yamlsafe import YamlError, load

        parsed = []
        for item in includes:
            try:
                value = load(item, "--include", yaml12=False)
            except YamlError as exc:
                raise UserError(f"--include {item!r}: not YAML ({exc.problem})") from None
            if isinstance(value, str):
                value = {"local": value}
            if not isinstance(value, dict):
                raise UserError(f"--include {item!r}: expected a mapping such as '{{local: lepton.yml}}' or a path")
            parsed.append(value)
        for tag in train_tags:
            if not tag.strip() or "\n" in tag:
                raise UserError(f"--train-tag {tag!r}: expected a runner tag (one line, not empty)")
        if train_image is not None and (not train_image.strip() or any(c.isspace() for c in train_image)):
            raise UserError(f"--train-image {train_image!r}: expected an image name such as nvidia/cuda:12.4.1-runtime")
        pipeline = sweep.gitlab_child_pipeline(
            plan,
            include=parsed,
            then=list(then),
            directory=directory,
            train_tags=[t.strip() for t in train_tags],
            train_image=train_image,
        )
        header = f"# lepton-ci sweep plan: {len(plan.combinations)} job(s) of a grid of {plan.grid_size}\n"
        text = header + yaml.dump(pipeline, Dumper=_block_dumper(), sort_keys=False, width=1000)
    elif fmt == "github":
        text = json.dumps(sweep.github_matrix(plan), separators=(",", ":"))
    else:
        text = json.dumps(
            {
                "jobs": len(plan.combinations),
                "grid_size": plan.grid_size,
                "sampled": plan.sampled,
                "seed": plan.seed,
                "entries": plan.entries(),
            }
        )
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text if text.endswith("\n") else text + "\n")
    else:
        click.echo(text.rstrip("\n"))
    outputs = {"jobs": str(len(plan.combinations))}
    if fmt == "github":
        outputs["matrix"] = text
    emit(outputs)


@sweep_group.command("collect")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False))
@path_option(
    "-o", "--output", help="Where to write the best run's run.json (default: train.output or .lepton/run.json)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the leaderboard as JSON.")
@click.pass_context
def collect_cmd(ctx: click.Context, dirs: tuple[Path, ...], output: Path | None, as_json: bool) -> None:
    """Gather the runs' run.json files under DIRS, pick the best by sweep.objective and put it in place."""
    from lepton_ci.forge.outputs import emit
    from lepton_ci.steps import sweep

    config = config_from(ctx)
    result = sweep.collect(config, list(dirs), output)
    best = result.best
    emit(
        {
            "best-run-id": best.record.run_id,
            "best-value": f"{best.value:g}",
            "run-json": str(output or config.run_path),
            "runs": str(len(result.entries)),
        }
    )
    if as_json:
        echo_json(result.to_dict())
    words = sweep.param_words({k: best.record.params.get(k) for k in result.keys})
    click.echo(
        f"lepton-ci: best of {len(result.entries)} run(s) by {result.metric} ({result.direction}): "
        f"{best.record.run_id} = {best.value:g} with {words}",
        err=True,
    )
