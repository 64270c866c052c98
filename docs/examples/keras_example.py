"""Keras 3 (torch backend) with trainmon: a small Sequential regression, checkpoints by ModelCheckpoint.

Settings come from the environment (TRAINMON_API_URL, ...). Run: python docs/examples/keras_example.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before the first `import keras`

import keras  # noqa: E402
import numpy as np  # noqa: E402
from trainmon.integrations.keras import TrainmonKerasCallback  # noqa: E402

if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)],
                             name="keras-example")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"])
    x = np.random.default_rng(0).random((256, 8), dtype=np.float32)
    y = x.sum(axis=1, keepdims=True)
    model.fit(x, y, epochs=3, batch_size=32, validation_split=0.25, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint("keras-checkpoints/epoch-{epoch:02d}.keras"),
        TrainmonKerasCallback(),  # the one line
    ])
