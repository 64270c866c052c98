"""SDK methods without an API: file formats, atomic writes, keep_last, and the records they spool."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apiserver import require_torch
from PIL import Image
from trainmon.client import pending_status
from trainmon.client.config import ClientConfig
from trainmon.client.spool import Spool, find_spools
from trainmon.exporter import TrainingMonitor


def offline_monitor(tmp_path: Path, **kwargs: Any) -> TrainingMonitor:
    return TrainingMonitor("offline-exp", port=False, gpu=False, system=False, handle_signals=False, env={},
                           mode="offline", spool_dir=str(tmp_path / "spool"), **kwargs)


def spooled(tmp_path: Path) -> list[dict]:
    (directory,) = find_spools(tmp_path / "spool")
    with Spool(directory) as spool:
        return [record for _position, record in spool.records()]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # checkpoints go to ./experiments/... by default
    return tmp_path


def test_offline_run_spools_every_event_and_point(workdir: Path) -> None:
    monitor = offline_monitor(workdir, params={"lr": 0.1}, tags={"team": "vision"})
    monitor.log_params({"optimizer": {"name": "adam", "betas": (0.9, 0.999)}, "nan_param": float("nan")})
    monitor.add_tag("stage", 2)
    monitor.add_note("first try")
    monitor.log_text("hello")
    logger = logging.getLogger("test_sdk_offline")
    logger.addHandler(monitor.logging_handler())
    logger.warning("via logging %d", 7)
    for step in range(10):
        monitor.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    monitor.finish("COMPLETED")
    records = spooled(workdir)
    ops = [record["op"] for record in records]
    assert ops[0] == "run" and "status" not in ops  # the final status waits beside the spool, for `trainmon sync`
    (directory,) = find_spools(workdir / "spool")
    assert pending_status.load(directory) == (monitor.run_id, "COMPLETED")
    assert records[0]["body"]["params"] == {"lr": 0.1} and records[0]["body"]["tags"] == {"team": "vision"}
    params = next(record for record in records if record["op"] == "params")["params"]
    assert params == {"lr": 0.1, "optimizer": {"name": "adam", "betas": [0.9, 0.999]}, "nan_param": "NaN"}
    assert {"op": "tags", "run_id": monitor.run_id, "tags": {"stage": "2"}} in records
    assert any(record["op"] == "note" and record["text"] == "first try" for record in records)
    lines = [line for record in records if record["op"] == "logs" for line in record["lines"]]
    assert [(line["level"], line["message"]) for line in lines] == [("INFO", "hello"), ("WARNING", "via logging 7")]
    points = [(p["key"], p["step"]) for r in records if r["op"] == "metrics" for p in r["points"]]
    assert points == [("loss", step) for step in range(10)]


def test_checkpoints_pickle_when_not_torch_atomic_sha256_and_keep_last(workdir: Path) -> None:
    monitor = offline_monitor(workdir)
    paths = [monitor.save_checkpoint({"weights": [step] * 10}, step=step, metrics={"loss": 1.0 / (step + 1)},
                                     keep_last=2) for step in range(4)]
    monitor.finish()
    directory = workdir / "experiments" / "offline-exp" / "checkpoints" / monitor.run_id / "rank0"
    assert sorted(directory.iterdir()) == paths[2:]  # keep_last=2 pruned the older ones; no temp files left
    assert pickle.loads(paths[3].read_bytes()) == {"weights": [3] * 10}  # documented format: pickle protocol 5
    registered = [record["body"] for record in spooled(workdir) if record["op"] == "checkpoint"]
    assert [body["step"] for body in registered] == [0, 1, 2, 3]
    assert registered[3]["sha256"] == hashlib.sha256(paths[3].read_bytes()).hexdigest()
    assert registered[3]["size_bytes"] == paths[3].stat().st_size and registered[3]["uri"].startswith("file://")
    assert registered[3]["metrics"] == {"loss": 0.25}


def test_checkpoint_names_cannot_escape_the_directory(workdir: Path) -> None:
    monitor = offline_monitor(workdir)
    for name in ("../evil", "a/b", ".hidden", ".."):
        with pytest.raises(ValueError):
            monitor.save_checkpoint({}, name=name)
    with pytest.raises(ValueError):
        monitor.save_checkpoint({}, keep_last=0)
    monitor.finish()


def test_disabled_mode_costs_nothing_but_still_writes_checkpoints(workdir: Path) -> None:
    monitor = TrainingMonitor("off", port=False, gpu=False, system=False, handle_signals=False, env={},
                              mode="disabled", spool_dir=str(workdir / "spool"))
    assert monitor.recorder.shipper is None and monitor.point_sink is None  # no thread, no sink
    monitor.log_params({"a": 1})
    monitor.add_note("ignored")
    assert monitor.log_image("img", np.zeros((2, 2), dtype=np.uint8)) is None
    path = monitor.save_checkpoint({"x": 1}, epoch=3)
    monitor.finish()
    assert path.exists() and path.name == "checkpoint-epoch00003.pkl"
    assert not (workdir / "spool").exists()


def test_images_from_arrays_pil_files_and_figures(workdir: Path) -> None:
    monitor = offline_monitor(workdir)
    gray = monitor.log_image("gray", np.linspace(0, 1, 12).reshape(3, 4), step=1)
    rgb = monitor.log_image("rgb", np.full((5, 6, 3), 200, dtype=np.uint8), step=1)
    pil = monitor.log_image("pil", Image.new("RGB", (7, 8), "red"))
    source = workdir / "input.bmp"
    Image.new("L", (3, 3), 128).save(source)
    from_file = monitor.log_image("file", str(source))
    with pytest.raises(ValueError, match="HxW"):
        monitor.log_image("bad", np.zeros((2, 2, 7)))
    monitor.finish()
    with Image.open(gray) as image:
        assert (image.format, image.size) == ("PNG", (4, 3)) and image.getpixel((3, 2)) == 255
    with Image.open(rgb) as image:
        assert image.size == (6, 5) and image.getpixel((0, 0)) == (200, 200, 200)
    with Image.open(pil) as image, Image.open(from_file) as other:
        assert image.size == (7, 8) and other.format == "PNG"
    registered = [record for record in spooled(workdir) if record["op"] == "artifact"]
    assert [(r["kind"], r["name"], r.get("step")) for r in registered] == [
        ("image", "gray.png", 1), ("image", "rgb.png", 1), ("image", "pil.png", None), ("image", "file.png", None)]
    assert all(Path(record["path"]).exists() for record in registered)


def test_matplotlib_figure_when_installed(workdir: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is optional (installed by `make test`)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.plot([1, 2, 3])
    monitor = offline_monitor(workdir)
    path = monitor.log_image("figure", figure)
    monitor.finish()
    assert Image.open(io.BytesIO(path.read_bytes())).format == "PNG"


def test_histograms_count_nonfinite_and_bin_the_rest(workdir: Path) -> None:
    monitor = offline_monitor(workdir)
    values = np.concatenate([np.arange(100, dtype=np.float64), [np.nan, np.inf]])
    path = monitor.log_histogram("weights", values, step=5, bins=10)
    monitor.finish()
    data = json.loads(path.read_text())
    assert data["counts"] == [10] * 10 and len(data["bins"]) == 11
    assert (data["count"], data["nonfinite"], data["min"], data["max"]) == (100, 2, 0.0, 99.0)
    again = offline_monitor(workdir / "again")
    with pytest.raises(ValueError):
        again.log_histogram("w", values, bins=0)
    again.finish()


def test_torch_checkpoint_histogram_and_graph(workdir: Path) -> None:
    torch = require_torch()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    monitor = offline_monitor(workdir)
    path = monitor.save_checkpoint(model, step=7)
    assert path.suffix == ".pt"
    restored = torch.load(path)
    assert set(restored) == set(model.state_dict()) and torch.equal(restored["0.weight"], model[0].weight)
    histogram = json.loads(monitor.log_histogram("w", model[0].weight, bins=8).read_text())
    assert histogram["count"] == 32 and sum(histogram["counts"]) == 32
    graph = json.loads(monitor.log_graph(model, torch.zeros(3, 4)).read_text())
    monitor.finish()
    assert graph["type"] == "Sequential" and graph["parameters"] == 4 * 8 + 8 + 8 * 2 + 2
    assert [child["type"] for child in graph["children"]] == ["Linear", "ReLU", "Linear"]
    assert graph["children"][0]["input_shapes"] == [[3, 4]] and graph["children"][2]["output_shapes"] == [[3, 2]]


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    config = ClientConfig.resolve({"TRAINMON_API_URL": "http://api:5000", "TRAINMON_MODE": "OFFLINE",
                                "TRAINMON_SPOOL_DIR": str(tmp_path), "TRAINMON_API_TOKEN": "t"})
    assert (config.api_url, config.mode, config.spool_dir, config.api_token) == (
        "http://api:5000", "offline", str(tmp_path), "t")
    assert ClientConfig.resolve({"TRAINMON_MODE": "offline"}, mode="disabled").mode == "disabled"  # argument wins
    with pytest.raises(ValueError, match="mode"):
        ClientConfig.resolve({}, mode="sometimes")
    with pytest.raises(ValueError, match="api_url"):
        ClientConfig.resolve({}, api_url="ftp://x")


def test_spool_full_is_counted_in_the_exporter_health_series(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import generate_latest

    monitor = offline_monitor(workdir)
    shipper = monitor.recorder.shipper  # shrink the cap to reach it quickly
    shipper.spool.max_bytes = shipper.spool.size_bytes + 2000
    with caplog.at_level(logging.WARNING, logger="trainmon.exporter"):
        for step in range(2000):
            monitor.log_metrics({"loss": float(step)}, step=step)
        monitor.flush()
        shipper.flush(10)
    exposition = generate_latest(monitor.registry).decode()
    monitor.finish()
    dropped = shipper.dropped_points["spool_full"]
    assert dropped > 0 and "DROPPING data (spool_full)" in caplog.text
    line = next(line for line in exposition.splitlines()
                if line.startswith("trainmon_exporter_dropped_points_total") and 'reason="spool_full"' in line)
    assert float(line.split()[-1]) == dropped


def test_graph_is_also_exported_to_onnx_when_onnx_is_installed(workdir: Path) -> None:
    torch = require_torch()
    onnx = pytest.importorskip("onnx", reason="onnx is optional (installed by `make test`)")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    monitor = offline_monitor(workdir)
    graph = monitor.log_graph(model, torch.zeros(1, 4))
    monitor.finish()
    exported = graph.with_name("Sequential.onnx")
    proto = onnx.load(exported)
    onnx.checker.check_model(proto)
    assert [node.op_type for node in proto.graph.node] == ["Gemm", "Relu"]
    registered = [r for r in spooled(workdir) if r["op"] == "artifact" and r["name"] == "Sequential.onnx"]
    assert registered and registered[0]["kind"] == "file" and Path(registered[0]["path"]) == exported


def test_log_checkpoint_registers_a_file_the_trainer_saved_itself(workdir: Path) -> None:
    monitor = offline_monitor(workdir)
    saved = workdir / "mine.ckpt"
    saved.write_bytes(b"weights" * 100)
    monitor.log_checkpoint("best", step=40, epoch=2, path=saved, metrics={"val_loss": 0.5})
    monitor.log_checkpoint("elsewhere", step=41)  # no file here: counted, and the run's log says so
    with pytest.raises(FileNotFoundError):
        monitor.log_checkpoint("ghost", path=workdir / "missing.ckpt")
    assert monitor.training.checkpoints_total == 2  # trainmon_checkpoints_total
    monitor.finish()
    records = spooled(workdir)
    [body] = [record["body"] for record in records if record["op"] == "checkpoint"]
    assert body["name"] == "best" and body["step"] == 40 and body["epoch"] == 2
    assert body["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest() and body["size_bytes"] == 700
    assert body["metrics"] == {"val_loss": 0.5} and body["uri"] == saved.resolve().as_uri()
    lines = [line["message"] for record in records if record["op"] == "logs" for line in record["lines"]]
    assert any("elsewhere" in line and "41" in line for line in lines)


def test_log_graph_keeps_the_name_it_is_given(workdir: Path) -> None:
    torch = require_torch()
    monitor = offline_monitor(workdir)
    monitor.log_graph(torch.nn.Linear(2, 3), name="encoder")
    monitor.finish()
    names = [record["name"] for record in spooled(workdir) if record["op"] == "artifact"]
    assert "encoder.graph.json" in names
