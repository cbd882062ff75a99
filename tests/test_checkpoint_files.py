"""Checkpoint files of every bad kind through the real commands (``logo_attn.evaluate CHECKPOINT`` and
``logo_attn.train --resume``, whose run folder holds the file as last.pt): each ends in one line
``error: ...`` naming the file and what is wrong, exit status 2, nothing in the file executed, nothing
written. One case of each kind also runs as its own process (``python -m ...``), with a time limit, so
that a FIFO that blocked would fail instead of hanging the suite."""

import io
import os
import pickle
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from logo_attn.logoformer import evaluate, train
from logo_attn.logoformer.checkpoints import save_checkpoint
from logo_attn.logoformer.config import parse_config
from logo_attn.logoformer.loop import build_optimizer
from logo_attn.logoformer.synthetic import TurningWheel
from logo_attn.logoformer.train import build_model

REPO = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "16", "--embed-dim", "16", "--depth", "1", "--num-heads", "2", "--batch", "4",
        "--synthetic-clips", "8", "8", "8", "--no-progress", "--epochs", "1", "--workers", "0"]
UNREADABLE = "not a readable PyTorch file"
NOT_OURS = "is not a logo_attn training checkpoint"
REFUSED = "refusing to unpickle"


class RunsCode:
    """Unpickling this runs a shell command that creates `marker`: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """(contents, bytes) of a checkpoint as training writes it for the TINY settings (untrained weights)."""
    config = parse_config(TINY)
    model = build_model(config, len(TurningWheel.class_names))
    path = tmp_path_factory.mktemp("run") / "best.pt"
    best = {"epoch": 1, "val_uar": 0.25, "val_war": 0.25}
    save_checkpoint(path, model, build_optimizer(model, config), config, 1, best, TurningWheel.class_names)
    return torch.load(path, weights_only=True), path.read_bytes()


def _zip_with_foreign_member():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes/readme.txt", "not a checkpoint")
    return buffer.getvalue()


def _torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# name -> (what the file is, given the marker path and the real checkpoint, a fragment of the error)
# The content is bytes, or "fifo", "directory", "unreadable", "missing", "dangling-link".
CASES = {
    "junk-text": (lambda marker, real: b"junk\n", UNREADABLE),
    "empty": (lambda marker, real: b"", UNREADABLE),
    "random-bytes": (lambda marker, real: bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                                              dtype=torch.uint8).tolist()), UNREADABLE),
    "truncated-zip": (lambda marker, real: real[1][:len(real[1]) // 2], UNREADABLE),
    "zip-of-other-files": (lambda marker, real: _zip_with_foreign_member(), UNREADABLE),
    **{f"pickle-protocol-{p}": (lambda marker, real, p=p: pickle.dumps({"model": [1, 2]}, protocol=p), UNREADABLE)
       for p in (0, 2, 5)},
    # A crafted pickle is refused by name where the unpickler gets as far as its global, and in any case never runs.
    **{f"crafted-pickle-protocol-{p}": (lambda marker, real, p=p: pickle.dumps(RunsCode(marker), protocol=p),
                                        REFUSED if p < 5 else UNREADABLE) for p in (0, 2, 5)},
    "crafted-checkpoint": (lambda marker, real: _torch_bytes({**real[0], "best": RunsCode(marker)}), REFUSED),
    "plain-tensor": (lambda marker, real: _torch_bytes(torch.zeros(3)), NOT_OURS + " (expected the entries"),
    "state-dict-of-another-model": (lambda marker, real: _torch_bytes(nn.Linear(3, 2).state_dict()), NOT_OURS),
    "wrong-entry-types": (lambda marker, real: _torch_bytes({**real[0], "epoch": "1", "class_names": None}),
                          "wrong entries epoch ('1', not a count of epochs); class_names"),
    "weights-of-another-shape": (lambda marker, real: _torch_bytes(
        {**real[0], "model": {k: v[..., :1] if v.dim() else v for k, v in real[0]["model"].items()}}),
        "does not fit the model"),
    "directory": ("directory", "is a directory"),
    "fifo": ("fifo", "is a FIFO"),
    "unreadable": ("unreadable", "permission"),
    "missing": ("missing", "does not exist"),
    "dangling-link": ("dangling-link", "does not exist"),
}


def make_case(name, path, marker, real):
    content = CASES[name][0]
    if not isinstance(content, str):
        path.write_bytes(content(marker, real))
    elif content == "directory":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)
    elif content == "unreadable":
        path.write_bytes(real[1])  # a good checkpoint, but nobody may read it
        path.chmod(0)
    elif content == "dangling-link":
        path.symlink_to(path.parent / "gone.pt")


def snapshot(folder):
    """Every entry under `folder` with its type, size and modification time."""
    return sorted((str(p.relative_to(folder)), stat.S_IFMT(p.lstat().st_mode), p.lstat().st_size, p.lstat().st_mtime_ns)
                  for p in folder.rglob("*"))


def setup_command(command, name, tmp_path, real):
    """(argv of the command, the bad file, the folder that must stay as it is, the marker a crafted file would create)."""
    marker = tmp_path / "code-ran"
    if command == "evaluate":
        folder = tmp_path / "checkpoints"
        folder.mkdir()
        path = folder / "best.pt"
        argv = [str(path), "--no-progress"]
    else:
        folder = tmp_path / "run"
        folder.mkdir()
        path = folder / "last.pt"
        argv = [*TINY, "--resume", "--out-dir", str(folder)]
    make_case(name, path, marker, real)
    return argv, path, folder, marker


def check_refusal(code, err, path, name, before, folder, marker):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines  # one line: no traceback, no warning
    assert str(path) in lines[0] and CASES[name][1].lower() in lines[0].lower(), (CASES[name][1], lines[0])
    assert not marker.exists(), "the file's code ran"
    assert snapshot(folder) == before, "the command wrote into the folder"


# A FIFO runs only in its own process (below); --resume without last.pt starts from scratch (tests/test_train.py).
@pytest.mark.parametrize("command, name", [(c, n) for c in ("evaluate", "resume") for n in CASES
                                           if n != "fifo" and (c, n) != ("resume", "missing")])
def test_bad_checkpoint_file_in_process(capsys, tmp_path, real_checkpoint, command, name):
    argv, path, folder, marker = setup_command(command, name, tmp_path, real_checkpoint)
    before = snapshot(folder)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        (evaluate.main if command == "evaluate" else train.main)(argv)
    check_refusal(exit_info.value.code, capsys.readouterr().err, path, name, before, folder, marker)


@pytest.mark.parametrize("command, name", [
    ("evaluate", "junk-text"),  # a stream the unpickler chokes on (with a KeyError from inside torch.load)
    ("evaluate", "crafted-pickle-protocol-2"),  # code that must not run
    ("evaluate", "plain-tensor"),  # valid PyTorch data that is no checkpoint
    ("evaluate", "fifo"),  # no writer will ever come: must be refused, not waited on
    ("resume", "fifo"),
])
def test_bad_checkpoint_file_through_the_entry_point(tmp_path, real_checkpoint, command, name):
    argv, path, folder, marker = setup_command(command, name, tmp_path, real_checkpoint)
    before = snapshot(folder)
    module = "logo_attn.evaluate" if command == "evaluate" else "logo_attn.train"
    result = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, cwd=REPO,
                            timeout=120, stdin=subprocess.DEVNULL)
    check_refusal(result.returncode, result.stderr, path, name, before, folder, marker)


def test_a_good_checkpoint_still_loads(tmp_path, real_checkpoint):
    # The checks above refuse only bad files: a real checkpoint, here in torch's legacy (non-zip) format,
    # evaluates (tests/test_train.py evaluates the zip format that training writes).
    path = tmp_path / "best.pt"
    torch.save(real_checkpoint[0], path, _use_new_zipfile_serialization=False)
    metrics = evaluate.evaluate(path, "test", tmp_path / "eval", progress=False)
    assert metrics["checkpoint_epoch"] == 1 and metrics["clips"] == 8


@pytest.mark.parametrize("name", ["junk-text", "directory", "unreadable", "crafted-pickle-protocol-2"])
def test_bad_backbone_weights_file(tmp_path, real_checkpoint, name):
    # --backbone-weights reads a user's file through the same loader
    path, marker = tmp_path / "resnet18.pth", tmp_path / "code-ran"
    make_case(name, path, marker, real_checkpoint)
    with pytest.raises(ValueError, match=re.escape(f"backbone_weights {path}")) as error:
        build_model(parse_config([*TINY, "--backbone-weights", str(path)]), 4)
    assert CASES[name][1].lower() in str(error.value).lower()
    assert not marker.exists()
