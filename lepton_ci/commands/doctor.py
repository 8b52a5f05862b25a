"""`lepton-ci doctor`."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import echo_json, status_line


@click.command("doctor")
@click.option("--gpu", is_flag=True, help="This runner is for GPU jobs: the driver, NVML and CUDA checks are required.")
@click.option("--docker", "require_docker", is_flag=True, help="Require a reachable Docker engine (for train.image).")
@click.option(
    "--path",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("."),
    show_default=True,
    help="Where free disk space is measured (the job's working directory).",
)
@click.option("--min-disk-gb", type=click.FloatRange(min=0), default=5, show_default=True, help="Free disk required.")
@click.option(
    "--min-memory-gb", type=click.FloatRange(min=0), default=2, show_default=True, help="Available memory required."
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor_cmd(
    gpu: bool, require_docker: bool, path: Path, min_disk_gb: float, min_memory_gb: float, as_json: bool
) -> None:
    """Check this runner: NVIDIA driver, CUDA in torch and TensorFlow, Docker's GPU support, disk and memory.

    Exits 0 when every required check passes, 1 otherwise."""
    from lepton_ci.errors import StepFailed
    from lepton_ci.steps import doctor

    checks = doctor.doctor(
        gpu=gpu, require_docker=require_docker, path=path, min_disk_gb=min_disk_gb, min_memory_gb=min_memory_gb
    )
    if as_json:
        echo_json(doctor.as_json(checks))
    else:
        for c in checks:
            kind = "" if c.required else " (optional)" if not c.ok else ""
            todo = f" -> {c.missing}" if not c.ok and c.missing else ""
            click.echo(status_line(c.ok, f"{c.name}: {c.detail}{kind}{todo}"))
    missing = [c.name for c in checks if c.required and not c.ok]
    if missing:
        raise StepFailed(f"doctor: required check(s) failed: {', '.join(missing)}")
    if not as_json:
        click.echo("all required checks passed")
