"""The build context of a full build: the Dockerfile, a wheelhouse made on this machine, the model files.

The image installs lepton-ci and its serve and framework extras with `pip --no-index` from the wheelhouse,
so the build itself reaches no network (hermetic, and fast on a runner whose pip cache is warm). The
wheelhouse is made here with this interpreter, so the base image's Python must be the same minor version.
Wheels of the dependencies are kept in a cache directory between builds; lepton-ci's own wheel is made
fresh from this checkout each time (or taken from the index for an installed release).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_ci import __version__
from lepton_ci.errors import TrustError, UserError
from lepton_ci.fsutil import sha256_file
from lepton_ci.serve.options import model_args

UID = 10001
PORT = 8080
MODEL_DIR = "/opt/lepton/model"
BASE_STAGE = "serve-base"
TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "Dockerfile.j2"
# The pip extras the image installs for each model framework (lepton-ci's own extras in setup.cfg).
FRAMEWORK_EXTRAS = {"sklearn": ["serve", "sklearn"], "torch": ["serve", "torch"], "keras": ["serve", "tensorflow"]}

Log = Callable[[str], None]


@dataclass(frozen=True)
class ImageInputs:
    """What a serving image is made of besides the model: a base serving image is reusable for another
    model exactly when these are equal, so they name its tag (see `base_tag`)."""

    base_image: str
    framework: str
    extras: tuple[str, ...]
    lepton_ci: str = __version__
    # `name==version` of the packages the model was trained with (`pins_from_run`): a pickled model must
    # be loaded by the library versions that wrote it, so the image installs exactly those.
    pins: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"lepton-ci[{','.join(self.extras)}]=={self.lepton_ci}"

    def digest(self) -> str:
        parts = [TEMPLATE.read_text(encoding="utf-8"), self.base_image, self.requirement, str(UID), *self.pins]
        text = "\n".join(parts)
        return hashlib.sha256(text.encode()).hexdigest()

    def base_tag(self) -> str:
        """`base-<lepton-ci version>-<framework>-<12 hex of the inputs>`: pushed by every full build."""
        return f"base-{self.lepton_ci}-{self.framework}-{self.digest()[:12]}"


# The libraries a saved model's bytes depend on, per framework: pinned in the image to the versions the
# training run recorded (run.json environment.packages). lepton-ci itself is pinned by ImageInputs.
PINNED_PACKAGES = {
    "sklearn": ("scikit-learn", "numpy", "scipy", "joblib"),
    "torch": ("torch", "numpy"),
    "keras": ("tensorflow", "tensorflow-cpu", "keras", "numpy"),
}


def pins_from_run(framework: str, packages: dict[str, Any]) -> tuple[str, ...]:
    """`name==version` for the framework's libraries the training run recorded, sorted."""
    wanted = PINNED_PACKAGES.get(framework, ())
    return tuple(sorted(f"{name}=={packages[name]}" for name in wanted if isinstance(packages.get(name), str)))


def serve_command(model_file: str, framework: str, name: str, version: int) -> list[str]:
    """The image's CMD: the model server on every address of the container, port 8080."""
    return [
        "python",
        "-m",
        "lepton_ci.serve",
        *model_args(MODEL_DIR, model_file, framework, name, version, "0.0.0.0", PORT),
    ]


def render_dockerfile(
    inputs: ImageInputs, base_labels: dict[str, str], model_labels: dict[str, str], cmd: list[str]
) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), undefined=jinja2.StrictUndefined, autoescape=False
    )
    return env.get_template(TEMPLATE.name).render(
        base_image=inputs.base_image,
        requirement=f"'{inputs.requirement}'",
        uid=UID,
        port=PORT,
        model_dir=MODEL_DIR,
        base_labels=base_labels,
        model_labels=model_labels,
        cmd=cmd,
    )


def _checkout() -> Path | None:
    """The source tree lepton-ci runs from, when it is a checkout (not an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "setup.cfg").is_file() and (root / "lepton_ci" / "__init__.py").is_file() else None


def default_wheel_cache() -> Path:
    explicit = os.environ.get("LEPTON_CI_WHEEL_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lepton-ci" / "wheels" / f"py{sys.version_info[0]}{sys.version_info[1]}"


def _pip(args: list[str], log: Log) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"]
    # A fixed SOURCE_DATE_EPOCH makes the wheel of an unchanged checkout byte-identical, so the engine's
    # layer cache keeps the installed environment between builds.
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "315532800")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        for line in (proc.stdout + proc.stderr).strip().splitlines()[-15:]:
            log(f"  {line}")
    return proc


def wheelhouse(dest: Path, inputs: ImageInputs, log: Log, cache: Path | None = None) -> Path:
    """Wheels for lepton-ci with the image's extras and every dependency, in `dest`."""
    cache = cache or default_wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lepton-wheel-") as own:
        links = ["--find-links", own, "--find-links", str(cache)]
        if inputs.pins:
            constraints = Path(own) / "constraints.txt"
            constraints.write_text("\n".join(inputs.pins) + "\n", encoding="utf-8")
            links += ["--constraint", str(constraints)]
            log(f"wheelhouse: the training run's versions {', '.join(inputs.pins)}")
        checkout = _checkout()
        if checkout is not None:
            log(f"wheelhouse: lepton-ci {inputs.lepton_ci} from {checkout}")
            proc = _pip(["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", own, str(checkout)], log)
            if proc.returncode != 0:
                raise UserError(f"cannot build the lepton-ci wheel from {checkout} (pip wheel failed; see above)")
            for stale in cache.glob("lepton_ci-*.whl"):  # never take an old build of the same version
                stale.unlink()
        offline = ["wheel", "--no-index", *links, "--wheel-dir", str(dest), inputs.requirement]
        if _pip(offline, lambda _: None).returncode == 0:
            log(f"wheelhouse: {inputs.requirement} from the cache {cache}")
            return dest
        log(f"wheelhouse: fetching the wheels {inputs.requirement} needs into {cache}")
        online = _pip(["wheel", *links, "--wheel-dir", str(cache), inputs.requirement], log)
        if checkout is not None:
            for built in cache.glob("lepton_ci-*.whl"):
                built.unlink()
        if online.returncode != 0 or _pip(offline, log).returncode != 0:
            raise UserError(
                f"cannot make the wheelhouse for {inputs.requirement} with {sys.executable} (pip wheel failed; "
                "see above): check the package index is reachable, or set build.extras"
                + (
                    f"; the training run's versions ({', '.join(inputs.pins)}) must be installable here, "
                    "or set build.pin_training_versions: false"
                    if inputs.pins
                    else ""
                )
            )
    return dest


def write_context(
    ctx: Path,
    dockerfile: str,
    model_src: Path,
    artifacts: list[dict[str, Any]],
    inputs: ImageInputs,
    log: Log,
    *,
    wheels: bool = True,
) -> Path:
    """Fill `ctx`: Dockerfile, wheels/ (unless the user's Dockerfile is used and asks for none: it still gets
    them), model/ with exactly the version's files (world-readable: the server runs as another user)."""
    (ctx / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    if wheels:
        wheelhouse(ctx / "wheels", inputs, log)
    model = ctx / "model"
    for art in artifacts:
        target = model / art["path"]
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        shutil.copyfile(model_src / art["path"], target)
        if sha256_file(target) != art["sha256"]:  # the copy the image gets is checked too, not only the source
            raise TrustError(f"{art['path']} changed while it was copied into the build context")
        os.chmod(target, 0o644)
    os.chmod(model, 0o755)
    return ctx
