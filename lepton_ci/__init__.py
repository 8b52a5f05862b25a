"""lepton-ci: CI/CD steps for machine-learning models.

Kept import-free on purpose: `lepton-ci --help` and training scripts that only call
`log_metrics` must not pay for the heavy parts of the package.
"""

__version__ = "0.1.0"


def log_metrics(metrics: dict, step: int | None = None) -> None:
    """Record metrics from a training script; `lepton-ci train` merges them into run.json."""
    from lepton_ci.tracking import log_metrics as _log

    _log(metrics, step=step)


def log_params(params: dict) -> None:
    """Record the parameters a training script actually used."""
    from lepton_ci.tracking import log_params as _log

    _log(params)


def params() -> dict:
    """The parameters `lepton-ci train` passed to this run (config `train.params` plus `--param`)."""
    from lepton_ci.tracking import params as _params

    return _params()


__all__ = ["__version__", "log_metrics", "log_params", "params"]
