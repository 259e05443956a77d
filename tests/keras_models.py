#!/usr/bin/env python3
"""Keras models for tests/keras.rs, written into DIR with seeded random weights (the Keras
Applications' ImageNet weights are a download this machine cannot make):
  resnet50.keras, mobilenetv2.keras, efficientnetb0.keras   Keras Applications, functional
  tiny.h5        a Sequential conv net in the legacy HDF5 format (4 classes, 64x64 input)
  headless.keras a conv net without a classifier (a 4-D output)
"""
import logging
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"

import keras  # noqa: E402
from keras import layers  # noqa: E402


def main():
    logging.getLogger("absl").setLevel(logging.ERROR)  # the .h5 file is legacy on purpose
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(1)
    for name, build in [("resnet50", keras.applications.ResNet50), ("mobilenetv2", keras.applications.MobileNetV2),
                        ("efficientnetb0", keras.applications.EfficientNetB0)]:
        build(weights=None).save(out / f"{name}.keras")
    tiny = keras.Sequential([
        keras.Input((64, 64, 3)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(16, 3, activation="relu", name="last_conv"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(4, activation="softmax"),
    ], name="tiny")
    keras.saving.save_model(tiny, out / "tiny.h5")
    keras.Sequential([keras.Input((64, 64, 3)), layers.Conv2D(8, 3)], name="headless").save(out / "headless.keras")


if __name__ == "__main__":
    main()
