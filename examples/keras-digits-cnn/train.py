"""A small Keras CNN on the 8x8 digits that ship with scikit-learn (nothing is downloaded).

EarlyStopping stops when the validation loss stops improving; ModelCheckpoint keeps the epoch with the best
validation accuracy in model.keras, and that best checkpoint (not the last epoch) is the artifact, evaluated
here after loading it back. Per-epoch metrics go into the run record through lepton-ci's Keras callback.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lepton_ci
from lepton_ci.frameworks import keras as lk

params = {"epochs": 12, "batch_size": 64, "filters": 16, "learning_rate": 0.003, "patience": 3, "seed": 0,
          **lepton_ci.params()}
keras.utils.set_random_seed(int(params["seed"]))
X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype("float32").reshape(-1, 8, 8, 1)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=int(params["seed"]), stratify=y)

filters = int(params["filters"])
model = keras.Sequential(
    [
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(filters * 2, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax", name="probs"),
    ]
)
model.compile(
    optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)
callbacks = [
    keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(params["patience"]), restore_best_weights=True),
    keras.callbacks.ModelCheckpoint("model.keras", monitor="val_accuracy", save_best_only=True),
    lk.metrics_callback(),
]
history = model.fit(X_train, y_train, validation_split=0.15, epochs=int(params["epochs"]),
                    batch_size=int(params["batch_size"]), callbacks=callbacks, verbose=0)

best = lk.load("model.keras", device="cpu")  # the artifact, loaded the way the server loads it
probs = best.predict({"image": X_test}, ["probs"])["probs"]
pred = probs.argmax(axis=1)
eps = 1e-7
metrics = {
    "eval": {
        "accuracy": float((pred == y_test).mean()),
        "log_loss": float(-np.log(np.clip(probs[np.arange(len(y_test)), y_test], eps, 1)).mean()),
    },
    "train": {"epochs_run": len(history.history["loss"])},
}
with open("metrics.json", "w") as f:
    json.dump(metrics, f, indent=2)
print(f"accuracy={metrics['eval']['accuracy']:.4f} epochs={metrics['train']['epochs_run']}")
