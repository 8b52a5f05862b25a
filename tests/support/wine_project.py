"""A small new scikit-learn project, not the shipped example: a random forest on the wine data that
scikit-learn ships (`load_wine`), with its own lepton.yml (model `wine`, gate rules) and the public key
committed beside it, as docs/keys.md tells users. The end-to-end tests put it through the documented
quick starts (tests/e2e/test_github_actions.py, tests/e2e/test_runner_images.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.support.keys import commit_public_key

MODEL = "wine"

TRAIN = """\
import json

import joblib
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

import lepton_ci

params = {"n_estimators": 20, "seed": 1, **lepton_ci.params()}
X, y = load_wine(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=int(params["seed"]), stratify=y)
model = RandomForestClassifier(n_estimators=int(params["n_estimators"]), random_state=int(params["seed"]))
model.fit(X_train, y_train)
with open("metrics.json", "w") as f:
    json.dump({"eval": {"accuracy": accuracy_score(y_test, model.predict(X_test))}}, f)
joblib.dump(model, "model.joblib")
"""

CONFIG = """\
version: 1
model:
  name: wine
  framework: sklearn
  file: model.joblib
train:
  command: python train.py
  params: {n_estimators: 20}
  metrics: [metrics.json]
  artifacts: [model.joblib]
gate:
  rules:
    - metric: eval.accuracy
      min: 0.8
registry: file://.lepton/registry
"""

GITIGNORE = ".lepton/\n.lepton-venv/\n.cache/\nmetrics.json\nmodel.joblib\n"


def write_wine_project(dest: Path) -> Path:
    """train.py, lepton.yml, .gitignore and the committed public key (named in `signing.public_key`) in
    `dest` (created if missing); the caller makes it a git repository."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "train.py").write_text(TRAIN)
    (dest / "lepton.yml").write_text(CONFIG)
    (dest / ".gitignore").write_text(GITIGNORE)
    commit_public_key(dest)
    return dest
