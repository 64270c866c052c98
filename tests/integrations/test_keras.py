"""TrainmonKerasCallback (trainmon.integrations.keras) with real Keras 3 on the torch backend, CPU, against the
real metadata API (SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from integration_support import EXAMPLES, Api, monitor_kwargs, only_run, require, run_script, trainer_env
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration


def test_the_docs_example_records_metrics_params_and_checkpoints(api: Api, tmp_path: Path) -> None:
    require("keras")
    run_script(EXAMPLES / "keras_example.py", tmp_path, trainer_env(api, tmp_path))
    run = only_run(api, "keras-example")  # the model's name
    assert run["status"] == "COMPLETED"
    run_id = run["run_id"]
    assert sorted(api.series(run_id, "loss")) == list(range(18))  # 3 epochs x 6 batches (192 samples / 32)
    assert sorted(api.series(run_id, "val_loss")) == [5, 11, 17]
    assert api.series(run_id, "epoch") == {5: 0, 11: 1, 17: 2}
    assert api.series(run_id, "learning_rate")[17] == pytest.approx(0.01)
    params = run["params"]
    assert params["optimizer"]["class"] == "Adam" and params["optimizer"]["learning_rate"] == pytest.approx(0.01)
    assert params["epochs"] == 3 and params["steps_per_epoch"] == 6 and params["loss"] == "mse"
    assert params["model"]["name"] == "keras-example" and params["model"]["parameters"] == 8 * 16 + 16 + 16 + 1
    assert run["context"]["packages"]["keras"]
    checkpoints = {c["name"]: c for c in api.checkpoints(run_id)}
    assert set(checkpoints) == {"epoch-01.keras", "epoch-02.keras", "epoch-03.keras"}
    for epoch, step in ((0, 5), (1, 11), (2, 17)):
        checkpoint = checkpoints[f"epoch-{epoch + 1:02d}.keras"]
        assert (checkpoint["epoch"], checkpoint["step"]) == (epoch, step)
        file = tmp_path / "keras-checkpoints" / f"epoch-{epoch + 1:02d}.keras"
        assert checkpoint["size_bytes"] == file.stat().st_size
        assert "val_loss" in checkpoint["metrics"]


def model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    built = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="keras-small")
    built.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    return built


def data() -> tuple[Any, Any]:
    import numpy as np

    x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    return x, x.sum(axis=1, keepdims=True)


def test_a_run_whose_training_raises_ends_failed(api: Api, tmp_path: Path) -> None:
    keras = require("keras")
    from trainmon.integrations.keras import TrainmonKerasCallback

    class FailAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 2:
                raise RuntimeError("boom at batch 2")

    x, y = data()
    with pytest.raises(RuntimeError, match="boom"):  # noqa: SIM117 - the monitor's block must see the error
        with TrainingMonitor("keras-failing", **monitor_kwargs(api, tmp_path)) as monitor:
            model().fit(x, y, batch_size=16, epochs=2, verbose=0,
                        callbacks=[TrainmonKerasCallback(monitor=monitor), FailAt()])
    run = api.wait_status(monitor.run_id, "FAILED")
    assert sorted(api.series(run["run_id"], "loss")) == [0, 1, 2]


def test_explicit_checkpoints_evaluate_after_fit_and_finish(api: Api, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    keras = require("keras")
    from trainmon.integrations.keras import TrainmonKerasCallback

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "old.weights.h5").write_bytes(b"before training: not registered")
    checkpoint = keras.callbacks.ModelCheckpoint("ckpt/{epoch}.weights.h5", save_weights_only=True, save_freq=2)
    callback = TrainmonKerasCallback("keras-explicit", checkpoints=[checkpoint], log_batches=False,
                                     **monitor_kwargs(api, tmp_path))
    built, (x, y) = model(), data()
    built.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback, checkpoint])  # ours first
    built.evaluate(x, y, verbose=0, callbacks=[callback])
    run_id = callback.monitor.run_id
    assert api.run(run_id)["status"] == "RUNNING"
    callback.finish()
    run = api.wait_status(run_id, "COMPLETED")
    assert list(api.series(run_id, "eval_loss")) == [7]  # model.evaluate() after fit, at fit's last step
    assert sorted(api.series(run_id, "loss")) == [3, 7]  # log_batches=False: the epochs' logs only
    names = sorted(c["name"] for c in api.checkpoints(run["run_id"]))
    assert names == ["1.weights.h5", "2.weights.h5"]  # saved every 2 batches, overwritten within the epoch
