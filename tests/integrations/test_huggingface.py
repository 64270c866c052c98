"""TrainmonCallback (trainmon.integrations.huggingface) with the real transformers Trainer on CPU: a tiny GPT-2
built from its config (no download) on random tokens, against the real metadata API (SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from integration_support import EXAMPLES, Api, monitor_kwargs, only_run, require, run_script, trainer_env
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration


def test_the_docs_example_records_metrics_params_and_checkpoints(api: Api, tmp_path: Path) -> None:
    require("transformers")
    run_script(EXAMPLES / "huggingface_example.py", tmp_path, trainer_env(api, tmp_path))
    run = only_run(api, "gpt2-tiny")  # args.run_name
    assert run["status"] == "COMPLETED"
    run_id = run["run_id"]
    assert sorted(api.series(run_id, "loss")) == list(range(1, 9))  # logging_steps=1, max_steps=8
    assert sorted(api.series(run_id, "eval_loss")) == [4, 8]
    assert {"grad_norm", "learning_rate", "epoch", "train_runtime"} <= set(api.keys(run_id))
    params = run["params"]
    assert params["training_args"]["max_steps"] == 8 and params["training_args"]["learning_rate"] == 1e-3
    assert params["training_args"]["train_batch_size"] == 4
    assert params["model_config"]["n_layer"] == 2 and params["model_config"]["vocab_size"] == 64
    assert params["model"]["class"] == "GPT2LMHeadModel" and params["model"]["parameters"] > 0
    assert run["context"]["packages"]["transformers"]
    checkpoints = {c["name"]: c for c in api.checkpoints(run_id)}
    assert set(checkpoints) == {"checkpoint-4-model.safetensors", "checkpoint-8-model.safetensors"}
    for step in (4, 8):
        checkpoint = checkpoints[f"checkpoint-{step}-model.safetensors"]
        file = tmp_path / "hf-output" / f"checkpoint-{step}" / "model.safetensors"
        assert checkpoint["step"] == step and checkpoint["size_bytes"] == file.stat().st_size
        assert "eval_loss" in checkpoint["metrics"]


def tiny_trainer(tmp_path: Path, callback: Any, fail_at: int | None = None, **args: Any) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    class Samples(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 32

        def __getitem__(self, index: int) -> dict[str, Any]:
            ids = torch.randint(0, 50, (8,), generator=torch.Generator().manual_seed(index))
            return {"input_ids": ids, "labels": torch.tensor(index % 2)}

    class FailAt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == fail_at:
                raise RuntimeError("boom at step 3")

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    training = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=8,
                                 logging_steps=1, save_strategy="no", use_cpu=True, report_to="none",
                                 disable_tqdm=True, **args)
    return Trainer(model=BertForSequenceClassification(config), args=training, train_dataset=Samples(),
                   callbacks=[callback, FailAt()])


def test_a_run_whose_training_raises_ends_failed(api: Api, tmp_path: Path) -> None:
    require("transformers")
    from trainmon.integrations.huggingface import TrainmonCallback

    with pytest.raises(RuntimeError, match="boom"):  # noqa: SIM117 - the monitor's block must see the error
        with TrainingMonitor("hf-failing", **monitor_kwargs(api, tmp_path)) as monitor:
            tiny_trainer(tmp_path, TrainmonCallback(monitor=monitor), fail_at=3).train()
    run = api.wait_status(monitor.run_id, "FAILED")
    assert sorted(api.series(run["run_id"], "loss")) == [1, 2]  # step 3 raised before its log
    assert run["params"]["model_config"]["model_type"] == "bert"


def test_an_owned_monitor_finishes_on_end_or_stays_open_for_evaluation(api: Api, tmp_path: Path) -> None:
    require("transformers")
    from trainmon.integrations.huggingface import TrainmonCallback

    callback = TrainmonCallback("hf-finish-on-end", finish_on_end=True, **monitor_kwargs(api, tmp_path))
    tiny_trainer(tmp_path / "a", callback).train()
    assert api.wait_status(callback.monitor.run_id, "COMPLETED")
    callback = TrainmonCallback(**monitor_kwargs(api, tmp_path))  # experiment: run_name, else the output folder
    trainer = tiny_trainer(tmp_path / "b", callback, run_name="runs/bert tiny")
    trainer.train()
    run_id = callback.monitor.run_id
    assert api.run(run_id)["status"] == "RUNNING" and api.run(run_id)["experiment"] == "bert-tiny"
    metrics = requests.get(callback.monitor.metrics_url, timeout=10).text
    assert any(line.startswith("trainmon_metric_value{") and 'key="loss"' in line and 'experiment="bert-tiny"' in line
               for line in metrics.splitlines())
    callback.finish()
    assert api.wait_status(run_id, "COMPLETED")
