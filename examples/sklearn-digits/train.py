"""Train a scikit-learn classifier on the digits data set that ships with scikit-learn.

Parameters come from lepton-ci (`lepton_ci.params()`), so `lepton-ci train -p C=0.5` changes them
without editing this file. Metrics go to metrics.json; the model to model.joblib.
"""

import json
import time

import joblib
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import lepton_ci

params = {"C": 1.0, "max_iter": 200, "seed": 0, "test_size": 0.25, **lepton_ci.params()}
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=float(params["test_size"]), random_state=int(params["seed"]), stratify=y
)

start = time.perf_counter()
model = make_pipeline(StandardScaler(), LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"])))
model.fit(X_train, y_train)
fit_seconds = time.perf_counter() - start

pred = model.predict(X_test)
metrics = {
    "eval": {
        "accuracy": accuracy_score(y_test, pred),
        "f1_macro": f1_score(y_test, pred, average="macro"),
        "log_loss": log_loss(y_test, model.predict_proba(X_test)),
    },
    "train": {"accuracy": accuracy_score(y_train, model.predict(X_train))},
}
with open("metrics.json", "w") as f:
    json.dump(metrics, f, indent=2)
lepton_ci.log_metrics({"fit_seconds": fit_seconds})
lepton_ci.log_params({"n_train": len(y_train), "n_test": len(y_test)})
joblib.dump(model, "model.joblib")
print(f"C={params['C']} accuracy={metrics['eval']['accuracy']:.4f} f1={metrics['eval']['f1_macro']:.4f}")
