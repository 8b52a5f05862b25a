"""Linear regression in PyTorch: y = 3x + 2 + noise on 10,000 generated samples, one learning rate per run.

The learning-rate grid is [0.01, 0.1, 1] (lepton.yml); each run takes one (`lepton-ci train -p lr=0.01`),
so a CI matrix can fan the grid out and the gate compares the best run with production. The best epoch's
weights (by validation MSE) are the artifact: model.pt2 (torch.export, served without this file) and
model.safetensors (the weights alone). Nothing is downloaded: the data is generated from the seed.
"""

import json
import math

import torch

import lepton_ci
from lepton_ci.frameworks import torch as lt

params = {"lr": 0.1, "epochs": 8, "batch_size": 256, "samples": 10_000, "noise": 0.1, "seed": 0, **lepton_ci.params()}
lr, epochs, batch_size = float(params["lr"]), int(params["epochs"]), int(params["batch_size"])
torch.manual_seed(int(params["seed"]))
device = lt.device(params.get("device"))  # CUDA when present; -p device=cpu or LEPTON_CI_DEVICE to choose

n = int(params["samples"])
x = torch.rand(n, 1) * 2 - 1
y = 3 * x + 2 + float(params["noise"]) * torch.randn(n, 1)
split = int(n * 0.8)
x_train, y_train, x_val, y_val = x[:split].to(device), y[:split].to(device), x[split:].to(device), y[split:].to(device)

model = torch.nn.Linear(1, 1).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=lr)
loss_fn = torch.nn.MSELoss()
best = lt.BestCheckpoint(monitor="val.mse", mode="min")
step = 0
for epoch in range(epochs):
    model.train()
    order = torch.randperm(split, device=device)
    for i in range(0, split, batch_size):
        idx = order[i : i + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(x_train[idx]), y_train[idx])
        loss.backward()
        optimizer.step()
        step += 1
    model.eval()
    with torch.no_grad():
        val_mse = loss_fn(model(x_val), y_val).item()
    if not math.isfinite(val_mse):
        raise SystemExit(f"lr={lr}: the loss diverged at epoch {epoch}")
    lt.log_metrics({"train": {"loss": loss.item()}, "val": {"mse": val_mse}}, step=epoch)
    best.update(model, val_mse, step=epoch)

model = model.cpu()
best.save(model, "model.pt2", torch.zeros(4, 1), input_names=["x"], output_names=["y"])
weight, bias = model.weight.item(), model.bias.item()
with torch.no_grad():
    mse = loss_fn(model(x_val.cpu()), y_val.cpu()).item()
metrics = {"eval": {"mse": mse, "rmse": math.sqrt(mse), "slope_error": abs(weight - 3), "intercept_error": abs(bias - 2)}}
with open("metrics.json", "w") as f:
    json.dump(metrics, f, indent=2)
lepton_ci.log_params({"device": str(device), "steps": step})
print(f"lr={lr} mse={mse:.5f} w={weight:.4f} b={bias:.4f} device={device}")
