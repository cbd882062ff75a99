"""Training/evaluation CLIs: configuration precedence, run artefacts, resume, evaluate, a real-data layout,
and a short synthetic run that must learn frame order."""

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from logo_attn.logoformer import evaluate as evaluate_cli
from logo_attn.logoformer.config import PRESETS, TrainConfig, make_config, parse_config
from logo_attn.logoformer.train import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = ["--image-size", "16", "--embed-dim", "16", "--depth", "1", "--num-heads", "2", "--batch", "4",
        "--synthetic-clips", "8", "8", "8", "--no-progress"]


# --------------------------------------------------------------------------------------------------
# configuration


def test_precedence_defaults_preset_file_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: synthetic\nlr: 0.5\nepochs: 3\nwindow: [1, 2, 2]\n")
    config = parse_config(["--config", str(path), "--lr", "0.25", "--reg_weight", "0.5"])
    assert config.lr == 0.25  # flag over file
    assert config.epochs == 3 and config.window == (1, 2, 2)  # file over preset and defaults
    assert config.embed_dim == PRESETS["synthetic"]["embed_dim"]  # preset over defaults
    assert config.fold == TrainConfig.fold and config.reg_weight == 0.5


def test_flag_spellings_and_types():
    config = parse_config(["--batch", "6", "--crop-scale", "0.5", "1", "--no-progress", "--attention", "divided"])
    assert config.batch_size == 6 and config.crop_scale == (0.5, 1.0) and config.progress is False
    assert config.attention == "divided"


@pytest.mark.parametrize("values, message", [
    ({"attention": "windowed"}, "attention must be one of"),
    ({"dataset": "dfew"}, "--root is required"),
    ({"dataset": "list", "train_list": "a.txt"}, "--test-list"),
    ({"dataset": "kinetics"}, "dataset must be one of"),
    ({"learning_rate": 1.0}, "unknown setting"),
    ({"window": [2, 7]}, "window must be a list of 3 values"),
    ({"rho": -0.1}, "rho, reg_weight, backbone_lr_scale, lr, warmup_epochs and workers must be >= 0"),
])
def test_bad_settings(values, message):
    with pytest.raises(ValueError, match=message):
        make_config(values)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: synthetic\nbatchsize: 4\n")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) batchsize"):
        parse_config(["--config", str(path)])


@pytest.mark.parametrize("name", ["dfew.yaml", "ferv39k.yaml", "list.yaml", "synthetic.yaml"])
def test_shipped_configs_load(name):
    extra = {"dfew.yaml": ["--root", "/data"], "ferv39k.yaml": ["--root", "/data"],
             "list.yaml": ["--train-list", "a.txt", "--test-list", "b.txt"]}.get(name, [])
    config = parse_config(["--config", str(CONFIGS / name), *extra])
    if name != "synthetic.yaml":  # the paper's settings
        assert (config.lr, config.rho, config.batch_size, config.depth, config.num_heads) == (1e-3, 0.05, 32, 4, 8)
    else:  # the file spells out the preset
        assert config == make_config({"dataset": "synthetic"})


# --------------------------------------------------------------------------------------------------
# runs


def _read_log(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_run_artefacts_resume_and_evaluate(tmp_path):
    out = tmp_path / "run"
    first = train(parse_config([*TINY, "--epochs", "1", "--out-dir", str(out)]))
    for name in ("best.pt", "last.pt", "log.csv", "config.yaml", "test_metrics.json", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    assert set(first) >= {"uar", "war", "per_class_recall", "confusion_matrix"}
    assert sum(map(sum, first["confusion_matrix"])) == 8

    # resume continues from epoch 2 and appends to the log
    train(parse_config([*TINY, "--epochs", "2", "--resume", "--out-dir", str(out)]))
    rows = _read_log(out / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_war", "val_loss", "val_uar", "val_war", "seconds"}
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2  # plain values and tensors only

    with pytest.raises(ValueError, match="embed_dim: checkpoint 16 vs now 24"):
        train(parse_config([*TINY, "--embed-dim", "24", "--epochs", "3", "--resume", "--out-dir", str(out)]))

    # evaluate rebuilds the pipeline from the checkpoint and reproduces the test metrics
    saved = json.loads((out / "test_metrics.json").read_text())
    metrics = evaluate_cli.evaluate(out / "best.pt", "test", tmp_path / "eval", progress=False)
    assert metrics["war"] == saved["war"] and metrics["confusion_matrix"] == saved["confusion_matrix"]
    assert (tmp_path / "eval" / "test_metrics.json").is_file() and (tmp_path / "eval" / "confusion_matrix.png").is_file()
    evaluate_cli.main([str(out / "best.pt"), "--split", "val", "--out-dir", str(tmp_path / "eval"), "--no-progress"])
    assert (tmp_path / "eval" / "val_confusion_matrix.png").is_file()


def test_annotation_list_dataset_end_to_end(tmp_path):
    # a real-data pipeline (frame folders, 8 x 2 sampling, augmentation, val split from train) on tiny clips
    lines = []
    for i in range(10):
        folder = tmp_path / "clips" / f"c{i}"
        folder.mkdir(parents=True)
        for f in range(5 + i):
            Image.new("RGB", (24, 24), (20 * i, 10 * f, 100)).save(folder / f"{f:03d}.jpg")
        lines.append(f"clips/c{i} {5 + i} {1 + i % 3}")
    (tmp_path / "train.txt").write_text("\n".join(lines[:8]) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(lines[8:]) + "\n")
    out = tmp_path / "run"
    metrics = train(parse_config([
        "--dataset", "list", "--root", str(tmp_path), "--train-list", str(tmp_path / "train.txt"),
        "--test-list", str(tmp_path / "test.txt"), "--num-classes", "3", "--segments", "2", "--duration", "2",
        "--image-size", "16", "--embed-dim", "16", "--depth", "1", "--num-heads", "2", "--batch", "2",
        "--epochs", "1", "--workers", "0", "--val-fraction", "0.3", "--no-progress", "--out-dir", str(out)]))
    assert metrics["clips"] == 2
    assert _read_log(out / "log.csv")[0]["val_war"] != ""
    assert "class 2" in (out / "test_metrics.json").read_text()


@pytest.mark.parametrize("attention, learns", [("logo", True), ("spatial", False)])
def test_short_synthetic_run_learns_frame_order(tmp_path, attention, learns):
    # 16 x 16 frames (a 8 x 1 x 1 token grid) keep this to ~20 s; the documented 32 x 32 run is in
    # docs/training.md. The classes differ only in frame order: LOGO must learn them, a per-frame
    # model with a temporal mean must stay at chance (25%).
    metrics = train(parse_config([
        "--dataset", "synthetic", "--image-size", "16", "--epochs", "2", "--synthetic-clips", "1536", "128", "256",
        "--attention", attention, "--no-progress", "--out-dir", str(tmp_path)]))
    if learns:
        assert metrics["war"] >= 0.8 and metrics["uar"] >= 0.8
    else:
        assert metrics["war"] <= 0.4
