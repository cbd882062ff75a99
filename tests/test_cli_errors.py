"""The application's commands on a user's mistakes: one line ``error: <what and where>`` on stderr and
exit status 2, never a traceback; config values coerced to their field's type or refused by name; and
a checkpoint whose pickle would run code is refused without running it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from logo_attn.logoformer import evaluate, train
from logo_attn.logoformer.config import make_config

TINY = ["--image-size", "16", "--embed-dim", "16", "--depth", "1", "--num-heads", "2", "--batch", "4",
        "--synthetic-clips", "8", "8", "8", "--no-progress", "--epochs", "1", "--workers", "0"]


def fails_with(capsys, main, argv, *fragments):
    """`main(argv)` exits with status 2 and one stderr line 'error: ...' holding every fragment."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in err[-1], (fragment, err[-1])
    return err[-1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train.main([*TINY, "--out-dir", str(out)])
    return out / "best.pt"


def test_dataset_without_root(capsys):
    fails_with(capsys, train.main, ["--dataset", "dfew"], "--root is required for dataset 'dfew'")


def test_missing_config_file(capsys, tmp_path):
    fails_with(capsys, train.main, ["--config", str(tmp_path / "nope.yaml")], "config file", "nope.yaml", "does not exist")


def test_config_that_is_not_yaml(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    fails_with(capsys, train.main, ["--config", str(bad)], "bad.yaml", "not valid YAML")


def test_missing_dataset_folder(capsys, tmp_path):
    fails_with(capsys, train.main, ["--dataset", "ferv39k", "--root", str(tmp_path / "none")], str(tmp_path / "none"))


def test_batch_larger_than_the_split(capsys, tmp_path):
    fails_with(capsys, train.main, [*TINY, "--batch", "64", "--out-dir", str(tmp_path)],
               "smaller than one batch (64)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so --device cuda works")
def test_cuda_without_a_gpu(capsys, tmp_path):
    fails_with(capsys, train.main, [*TINY, "--device", "cuda", "--out-dir", str(tmp_path)],
               "device 'cuda' was asked for but no CUDA device is visible")


def test_evaluate_missing_and_directory_checkpoints(capsys, tmp_path):
    fails_with(capsys, evaluate.main, [str(tmp_path / "best.pt")], "does not exist")
    fails_with(capsys, evaluate.main, [str(tmp_path)], "is a directory", "best.pt")


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"", b"PK\x03\x04 truncated zip"],
                         ids=["text", "empty", "broken-zip"])
def test_corrupt_checkpoint_names_the_file(capsys, tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    fails_with(capsys, evaluate.main, [str(path)], str(path), "not a readable PyTorch file")


def test_a_file_that_is_not_a_training_checkpoint(capsys, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    fails_with(capsys, evaluate.main, [str(path)], str(path), "is not a logo_attn training checkpoint")


def test_checkpoint_of_another_model(capsys, tmp_path, checkpoint):
    saved = torch.load(checkpoint, weights_only=True)
    saved["model"] = {k: v[..., :1] if v.dim() else v for k, v in saved["model"].items()}
    path = tmp_path / "other.pt"
    torch.save(saved, path)
    fails_with(capsys, evaluate.main, [str(path), "--no-progress"], str(path), "does not fit the model")


class RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_crafted_checkpoint_is_refused_and_never_runs(capsys, tmp_path, checkpoint, command):
    marker = tmp_path / "pwned"
    saved = torch.load(checkpoint, weights_only=True)
    saved["best"] = RunsCode(marker)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(saved, run / "last.pt")
    if command == "evaluate":
        fails_with(capsys, evaluate.main, [str(run / "last.pt")], "refusing to unpickle")
    else:
        fails_with(capsys, train.main, [*TINY, "--resume", "--out-dir", str(run)], "refusing to unpickle")
    assert not marker.exists(), "the checkpoint's code ran"


def test_the_entry_point_itself_exits_2_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "logo_attn.train", "--dataset", "dfew"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2 and result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------------
# Config values: coerced to their field's type, or refused naming the field
# --------------------------------------------------------------------------------------------------


def test_yaml_1_1_strings_become_numbers_and_booleans(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text('lr: 1e-3\nepochs: "3"\nprogress: "no"\nwindow: [1, "2", 2]\n')  # 1e-3 is a str in YAML 1.1
    config = train.parse_config(["--config", str(path)])
    assert config.lr == 1e-3 and isinstance(config.lr, float)
    assert config.epochs == 3 and config.progress is False and config.window == (1, 2, 2)


@pytest.mark.parametrize("values,message", [
    ({"epochs": "one"}, "epochs must be an integer, got 'one'"),
    ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
    ({"progress": "maybe"}, "progress must be true or false"),
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"lr": None}, "lr must be set"),
    ({"root": ["a"]}, "root must be a string"),
    ({"num_heads": 3}, "embed_dim (64) must be divisible by num_heads (3)"),  # the synthetic preset's width
    ({"workers": -1}, "must be >= 0"),
])
def test_bad_values_are_refused_by_name(values, message):
    with pytest.raises(ValueError) as error:
        make_config(values, "run.yaml")
    assert message in str(error.value)
