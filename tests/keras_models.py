#!/usr/bin/env python3
"""Keras models for tests/keras.rs, written into DIR with seeded random weights (the Keras
Applications' ImageNet weights are a download this machine cannot make):
  resnet50.keras, mobilenetv2.keras, efficientnetb0.keras   Keras Applications, functional
  tiny.h5        a Sequential conv net in the legacy HDF5 format (4 classes, 64x64 input)
  headless.keras a conv net without a classifier (a 4-D output)
  notkeras.keras a zip archive, as a .keras file is, that holds no Keras model
With names after DIR (`tiny headless`), only those.
"""
import logging
import os
import sys
import zipfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"

import keras  # noqa: E402
from keras import layers  # noqa: E402


def main():
    logging.getLogger("absl").setLevel(logging.ERROR)  # the .h5 file is legacy on purpose
    out = Path(sys.argv[1])
    wanted = set(sys.argv[2:]) or {"resnet50", "mobilenetv2", "efficientnetb0", "tiny", "headless", "notkeras"}
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(1)
    for name, build in [("resnet50", keras.applications.ResNet50), ("mobilenetv2", keras.applications.MobileNetV2),
                        ("efficientnetb0", keras.applications.EfficientNetB0)]:
        if name in wanted:
            build(weights=None).save(out / f"{name}.keras")
    if "notkeras" in wanted:
        zipfile.ZipFile(out / "notkeras.keras", "w").writestr("a.txt", "x")
    if "tiny" in wanted:
        tiny = keras.Sequential([
            keras.Input((64, 64, 3)),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(16, 3, activation="relu", name="last_conv"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(4, activation="softmax"),
        ], name="tiny")
        keras.saving.save_model(tiny, out / "tiny.h5")
    if "headless" in wanted:
        keras.Sequential([keras.Input((64, 64, 3)), layers.Conv2D(8, 3)], name="headless").save(out / "headless.keras")


if __name__ == "__main__":
    main()
