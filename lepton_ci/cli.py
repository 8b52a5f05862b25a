"""The `lepton-ci` command line: a thin click layer over the step modules.

Subcommands live in `lepton_ci.commands.*` and are imported only when invoked, so `--help` and
`--version` stay fast and never import numpy, torch, jinja2 or requests. Every error reaches the user
as one line and an exit code: 2 for bad input, 1 for a failed step; `--debug` shows the traceback.

No line this module prints can carry a secret: `main` registers the value of every secret variable
(lepton_ci.secrets) before a command runs, and every error message and traceback is masked on the way
out, including "internal error" ones, whose text nobody has vetted.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from lepton_ci import __version__

# name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("lepton_ci.commands.run", "run_cmd", "Run the steps configured in lepton.yml, in order."),
    "train": ("lepton_ci.commands.train", "train_cmd", "Run the training command and record run.json."),
    "metrics": ("lepton_ci.commands.metrics", "metrics_group", "Compare metrics across git revisions."),
    "gate": ("lepton_ci.commands.gate", "gate_cmd", "Check the candidate's metrics against rules and a baseline."),
    "tag": ("lepton_ci.commands.tag", "tag_cmd", "Register the gated model as a new immutable version."),
    "registry": ("lepton_ci.commands.registry", "registry_group", "Inspect and move versions and aliases."),
    "build": ("lepton_ci.commands.build", "build_cmd", "Build and push the serving image of a blessed version."),
    "deploy": ("lepton_ci.commands.deploy", "deploy_group", "Deploy a blessed version; status, stop, rollback."),
    "report": ("lepton_ci.commands.report", "report_cmd", "Render the markdown report for the pull request."),
    "config": ("lepton_ci.commands.config", "config_group", "Validate lepton.yml or print its JSON Schema."),
    "keys": ("lepton_ci.commands.keys", "keys_group", "Generate and inspect the signing key pair."),
    "sweep": ("lepton_ci.commands.sweep", "sweep_group", "Grid search as a CI matrix: plan jobs, collect the best."),
    "doctor": ("lepton_ci.commands.doctor", "doctor_cmd", "Check a runner: GPUs, CUDA, Docker, disk and memory."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="lepton-ci", message="%(prog)s %(version)s")
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="PATH",
    envvar="LEPTON_CI_CONFIG",
    help="Project config (default: ./lepton.yml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (also: LEPTON_CI_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """CI/CD steps for machine-learning models: train, gate, tag, deploy, report."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["debug"] = debug


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("LEPTON_CI_DEBUG", "").lower() in ("1", "true", "yes", "on")


def _masked(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    from lepton_ci.forge.http import mask_secrets  # stdlib-only module: fine on the error path

    return mask_secrets(text)


def _traceback_if_debug(args: list[str]) -> None:
    """With --debug, show where an error came from (masked); the exit code stays the same as without it."""
    if _debug_requested(args):
        import traceback

        click.echo(_masked(traceback.format_exc()).rstrip("\n"), err=True)


def _register_secrets() -> None:
    """Register the secrets in the environment for masking, importing the masking code only if any is set."""
    from lepton_ci.secrets import register_env_secrets, secret_values

    if secret_values():
        register_env_secrets()


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps every exception to one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    _register_secrets()
    from lepton_ci import progress

    progress.set_enabled("--json" not in args)  # machine output: no progress bars on stderr either
    try:
        cli.main(args=args, prog_name="lepton-ci", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("lepton-ci: aborted", err=True)
        return 130
    except click.ClickException as exc:
        _traceback_if_debug(args)
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else "lepton-ci: "
        hint = "" if ctx is None else f" (see '{ctx.command_path} --help')"
        click.echo(_masked(f"{where}error: {exc.format_message()}{hint}"), err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("lepton-ci: interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place all errors become exit codes
        from lepton_ci.errors import LeptonError

        _traceback_if_debug(args)
        if isinstance(exc, LeptonError):
            click.echo(_masked(f"lepton-ci: error: {exc}"), err=True)
            return exc.exit_code
        if isinstance(exc, OSError) and exc.filename:
            click.echo(_masked(f"lepton-ci: error: {exc.strerror}: {exc.filename}"), err=True)
            return 2
        click.echo(
            _masked(f"lepton-ci: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"),
            err=True,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
