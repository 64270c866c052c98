"""Per-step cost of each framework integration against the same loop logging through
`TrainingMonitor.log_metrics` directly.

For each framework, two modes train the same tiny model on CPU, in alternating rounds (rotated, so that neither
always runs first): "direct", where a minimal logger/callback of the framework hands the framework's metrics to
`monitor.log_metrics` (the floor: what any integration has to do), and "trainmon", the integration itself
(`TrainmonLogger`, `TrainmonCallback`, `TrainmonKerasCallback`; for plain PyTorch, `watch(every=100)` on top of
`log_metrics`). A step's time is the wall time between consecutive step-end hooks (Lightning
`on_train_batch_end`, Trainer `on_step_end`, Keras `on_train_batch_end`, the loop itself), which includes the
logging of the step; the first steps of each round are warm-up. Prints each mode's median step time and its ratio
to "direct", then the ratio of means. The monitors serve no port and record no metadata (Prometheus side only),
in both modes alike.

    .venv/bin/python bench/integrations.py [--rounds 5] [--steps 200] [--only lightning,huggingface,keras,torch]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from _common import alternating_rounds, print_medians  # noqa: E402
from trainmon.exporter import TrainingMonitor  # noqa: E402

WARMUP = 10


def new_monitor(name: str) -> TrainingMonitor:
    return TrainingMonitor(name, port=False, gpu=False, system=False, handle_signals=False, env={})


def step_times(stamps: list[float]) -> list[float]:
    """Durations between consecutive step ends, without the warm-up steps."""
    return [b - a for a, b in zip(stamps[WARMUP:], stamps[WARMUP + 1:], strict=False)]


# --- Lightning ---


def lightning_modes(steps: int) -> dict[str, Callable[[int], list[float]]]:
    import lightning as L
    import torch
    from lightning.pytorch.loggers.logger import Logger
    from torch.utils.data import DataLoader, TensorDataset
    from trainmon.integrations.lightning import TrainmonLogger

    class Direct(Logger):
        def __init__(self, monitor: TrainingMonitor):
            super().__init__()
            self.monitor = monitor

        name = property(lambda self: "direct")
        version = property(lambda self: "0")

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.monitor.log_metrics(metrics, step)

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            self.monitor.log_params(dict(params))

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_batch_end(self, *args: Any) -> None:
            self.stamps.append(time.perf_counter())

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"lr": 0.01})
            self.net = torch.nn.Linear(32, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            self.log("lr", 0.01)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    x = torch.randn(steps * 8, 32)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    workdir = tempfile.mkdtemp(prefix="trainmon-bench-lightning-")

    def mode(make_logger: Callable[[TrainingMonitor], Any]) -> Callable[[int], list[float]]:
        def one_round(index: int) -> list[float]:
            monitor, clock = new_monitor("bench-lightning"), Clock()
            trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=make_logger(monitor),
                                callbacks=[clock], log_every_n_steps=1, enable_progress_bar=False,
                                enable_model_summary=False, enable_checkpointing=False, default_root_dir=workdir)
            trainer.fit(Module(), data)
            monitor.finish()
            return step_times(clock.stamps)

        return one_round

    return {"direct": mode(Direct), "trainmon": mode(lambda monitor: TrainmonLogger(monitor=monitor))}


# --- Hugging Face ---


def huggingface_modes(steps: int) -> dict[str, Callable[[int], list[float]]]:
    import torch
    from trainmon.integrations.huggingface import TrainmonCallback
    from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    class Direct(TrainerCallback):
        def __init__(self, monitor: TrainingMonitor):
            self.monitor = monitor

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            self.monitor.log_metrics(logs or {}, state.global_step)

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.stamps.append(time.perf_counter())

    class Tokens(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.ids = torch.randint(0, 64, (steps * 4, 16), generator=torch.Generator().manual_seed(0))

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, index: int) -> dict[str, Any]:
            return {"input_ids": self.ids[index], "labels": self.ids[index]}

    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=0,
                        eos_token_id=0)
    workdir = tempfile.mkdtemp(prefix="trainmon-bench-hf-")

    def mode(make_callback: Callable[[TrainingMonitor], Any]) -> Callable[[int], list[float]]:
        def one_round(index: int) -> list[float]:
            torch.manual_seed(0)
            monitor, clock = new_monitor("bench-huggingface"), Clock()
            args = TrainingArguments(output_dir=workdir, max_steps=steps, per_device_train_batch_size=4,
                                     logging_steps=1, save_strategy="no", use_cpu=True, report_to="none",
                                     disable_tqdm=True, log_level="error")
            trainer = Trainer(model=GPT2LMHeadModel(config), args=args, train_dataset=Tokens(),
                              callbacks=[make_callback(monitor), clock])
            trainer.remove_callback(PrinterCallback)  # no log lines on stdout
            trainer.train()
            monitor.finish()
            return step_times(clock.stamps)

        return one_round

    return {"direct": mode(Direct), "trainmon": mode(lambda monitor: TrainmonCallback(monitor=monitor))}


# --- Keras ---


def keras_modes(steps: int) -> dict[str, Callable[[int], list[float]]]:
    import keras
    import numpy as np
    from trainmon.integrations.keras import TrainmonKerasCallback

    class Direct(keras.callbacks.Callback):
        def __init__(self, monitor: TrainingMonitor):
            super().__init__()
            self.monitor = monitor
            self.step = 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.monitor.log_metrics(logs or {}, self.step)
            self.step += 1

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stamps: list[float] = []

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.stamps.append(time.perf_counter())

    x = np.random.default_rng(0).random((steps * 8, 32), dtype=np.float32)
    y = x.sum(axis=1, keepdims=True)

    def mode(make_callback: Callable[[TrainingMonitor], Any]) -> Callable[[int], list[float]]:
        def one_round(index: int) -> list[float]:
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(1)], name="bench")
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse", metrics=["mae"])
            monitor, clock = new_monitor("bench-keras"), Clock()
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[make_callback(monitor), clock])
            monitor.finish()
            return step_times(clock.stamps)

        return one_round

    return {"direct": mode(Direct), "trainmon": mode(lambda monitor: TrainmonKerasCallback(monitor=monitor))}


# --- plain PyTorch: watch ---


def torch_modes(steps: int) -> dict[str, Callable[[int], list[float]]]:
    import torch
    from trainmon.integrations.torch import watch

    def mode(watched: bool) -> Callable[[int], list[float]]:
        def one_round(index: int) -> list[float]:
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
            monitor, stamps = new_monitor("bench-torch"), []
            handle = watch(monitor, model, every=100) if watched else None
            for step in range(steps):
                x = torch.randn(8, 32)
                loss = torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                monitor.log_metrics({"loss": loss.item(), "lr": 0.01}, step)
                stamps.append(time.perf_counter())
            if handle is not None:
                handle.remove()
            monitor.finish()
            return step_times(stamps)

        return one_round

    return {"direct": mode(False), "trainmon": mode(True)}


FRAMEWORKS: dict[str, tuple[str, Callable[[int], dict[str, Callable[[int], list[float]]]], str]] = {
    "lightning": ("lightning", lightning_modes, "Lightning TrainmonLogger"),
    "huggingface": ("transformers", huggingface_modes, "Hugging Face TrainmonCallback"),
    "keras": ("keras", keras_modes, "Keras TrainmonKerasCallback"),
    "torch": ("torch", torch_modes, "PyTorch watch(every=100) + log_metrics"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="training steps per round")
    parser.add_argument("--only", default=",".join(FRAMEWORKS), help="comma-separated: " + ", ".join(FRAMEWORKS))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    for name in [each.strip() for each in args.only.split(",") if each.strip()]:
        module, modes, title = FRAMEWORKS[name]
        if importlib.util.find_spec(module) is None:
            print(f"\n{title}: {module} is not installed, skipped")
            continue
        rounds = alternating_rounds(args.rounds, modes(args.steps), rotate=True)
        samples = {mode: [t for times in per_round for t in times] for mode, per_round in rounds.items()}
        print(f"\n{title} ({args.rounds} rounds x {args.steps - WARMUP - 1} steps, floor = direct log_metrics):")
        print_medians(samples, "direct", "us", scale=1e6)
        means = {mode: statistics.fmean(times) for mode, times in samples.items()}
        print(f"  ratio of means trainmon/direct {means['trainmon'] / means['direct']:.3f}")


if __name__ == "__main__":
    main()
