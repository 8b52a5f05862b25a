"""The sources' regression (y = 3x + 2 + noise, 10,000 samples) fitted by gradient descent in pure Python, for
the sweep's end-to-end tests and the self-test workflow: one learning rate per CI job (sweep.grid in lepton.yml).
"""

import json
import os
import random

lr = float(os.environ.get("LEPTON_PARAM_LR", "0.1"))
epochs = int(os.environ.get("LEPTON_PARAM_EPOCHS", "100"))
rng = random.Random(0)
xs = [rng.random() for _ in range(10_000)]
ys = [3 * x + 2 + rng.gauss(0, 0.1) for x in xs]
train, test = list(zip(xs, ys))[:8000], list(zip(xs, ys))[8000:]
w = b = 0.0
for _ in range(epochs):
    gw = sum((w * x + b - y) * x for x, y in train) * 2 / len(train)
    gb = sum((w * x + b - y) for x, y in train) * 2 / len(train)
    w, b = w - lr * gw, b - lr * gb
mse = sum((w * x + b - y) ** 2 for x, y in test) / len(test)
with open("metrics.json", "w") as f:
    json.dump({"eval": {"mse": min(mse, 1e300), "slope_error": abs(w - 3)}}, f)
with open("model.json", "w") as f:
    json.dump({"w": w, "b": b, "lr": lr}, f)
print(f"lr={lr} epochs={epochs}: w={w:.3f} b={b:.3f} mse={mse:.4g}")
