"""The naive baseline for `bench_throughput.py`: ONE training per Python process, the way a notebook turned
into a script does it. Reads the contest CSV with pandas, preprocesses image by image with cv2 in a Python loop
(stretch → binarize → erode, the same steps and parameters as the harness spec), trains the same CNN
(`harness.model.build_cnn`, default config) with Keras, logs with `mlflow.start_run` / `log_params` /
`log_metric`.

    python benchmarks/naive_train.py --csv train.csv --seed 0 --epochs 3 --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import os

import cv2
import mlflow
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split


def preprocess(image: np.ndarray, binarize: bool = True) -> np.ndarray:
    """stretch (min/max onto 0..255) → binarize (> 135) → erode (2×2, once), one 28×28 uint8 image; with
    `binarize=False` the stretch alone."""
    low, high = float(image.min()), float(image.max())
    if high > low:
        image = np.clip(np.rint((image.astype(np.float64) - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
    if not binarize:
        return image.astype(np.float32) / 255.0
    _, image = cv2.threshold(image, 135, 255, cv2.THRESH_BINARY)
    image = cv2.erode(image, np.ones((2, 2), np.uint8), iterations=1)
    return image.astype(np.float32) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--stretched-epochs", type=int, default=0,
                        help="first train this many epochs on stretched images (the notebook's first stage)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default="naive")
    args = parser.parse_args()

    frame = pd.read_csv(args.csv)
    pixels = frame[[str(i) for i in range(784)]].to_numpy(np.uint8).reshape(-1, 28, 28)
    images = np.stack([preprocess(image) for image in pixels])[..., None]
    stretched = np.stack([preprocess(image, binarize=False) for image in pixels])[..., None]
    digits = frame["digit"].to_numpy()
    x_train, x_val, y_train, y_val, s_train, s_val = train_test_split(images, digits, stretched, test_size=0.2,
                                                                      stratify=digits, random_state=0)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from harness.study.spec import AugmentationConfig, ModelConfig
    from harness.training.model import build_cnn

    keras.utils.set_random_seed(args.seed)
    seeds = dict.fromkeys(("init", "order", "augment", "dropout", "split"), args.seed)
    model = build_cnn(28, ModelConfig(), AugmentationConfig(), seeds)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"seed={args.seed}"):
        mlflow.log_params({"seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size, "csv": args.csv})
        stages = [(s_train, s_val, args.stretched_epochs), (x_train, x_val, args.epochs)]
        done = 0
        for train_x, val_x, epochs in stages:
            if not epochs:
                continue
            history = model.fit(train_x, y_train, batch_size=args.batch_size, epochs=epochs,
                                validation_data=(val_x, y_val), verbose=0)
            for epoch in range(epochs):
                for key, values in history.history.items():
                    mlflow.log_metric(f"epoch_{key}", float(values[epoch]), step=done + epoch + 1)
            done += epochs
        predicted = model.predict(x_val, batch_size=512, verbose=0).argmax(axis=1)
        mlflow.log_metric("accuracy", float((predicted == y_val).mean()))


if __name__ == "__main__":
    main()
