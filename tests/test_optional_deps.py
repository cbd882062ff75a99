"""The application without its optional packages (hidden with ``sys.modules[name] = None``, which makes
``import name`` fail as if it were not installed): what needs one ends in ``error: <what> needs
<package>: pip install "logo-attn[<extra>]"`` with exit status 2, what is only nice to have (progress
bar, confusion-matrix PNG) goes on after one warning. And the pip command in those messages names
this distribution and an extra of it that brings the package."""

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from logo_attn.logoformer import optional, train
from logo_attn.logoformer.config import TrainConfig, make_config, parse_config
from logo_attn.logoformer.data import ClipRecord, FrameClipDataset
from logo_attn.logoformer.loop import progress_bar
from logo_attn.logoformer.reports import write_config, write_report

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hide(monkeypatch):
    """hide(name): `import name` (and of its submodules) fails from now on, in this test only."""
    monkeypatch.setattr(optional, "_warned", set())  # each test sees its own first warning

    def hide(name):
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)

    return hide


def test_config_file_without_pyyaml_through_the_entry_point(tmp_path):
    # `python -m logo_attn.train` itself, with PyYAML hidden before anything is imported
    code = ("import runpy, sys; sys.modules['yaml'] = None; sys.argv[0] = 'logo_attn.train'; "
            "runpy.run_module('logo_attn.train', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code, "--config", "configs/dfew.yaml", "--root", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        'error: reading the config file configs/dfew.yaml needs PyYAML: pip install "logo-attn[train]"']


def test_frame_folders_without_pillow_fail_before_any_worker(hide, tmp_path, capsys):
    hide("PIL")
    (tmp_path / "clip").mkdir()
    with pytest.raises(ValueError, match=re.escape(f'reading frame images such as those in {tmp_path / "clip"} needs '
                                                   'Pillow: pip install "logo-attn[train]"')):
        FrameClipDataset([ClipRecord(tmp_path / "clip", 0, "list.txt:1")], train=False)
    # and the command says it in one line
    (tmp_path / "list.txt").write_text("clip 3 1\n")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "list", "--root", str(tmp_path), "--train-list", str(tmp_path / "list.txt"),
                    "--test-list", str(tmp_path / "list.txt"), "--val-list", str(tmp_path / "list.txt"),
                    "--out-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith('needs Pillow: pip install "logo-attn[train]"')
    assert not (tmp_path / "run").exists()


def test_video_files_without_pyav(hide, tmp_path):
    hide("av")
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape('needs PyAV: pip install "logo-attn[video]"')):
        FrameClipDataset([ClipRecord(tmp_path / "clip.mp4", 0, "list.txt:1")], train=False)


def test_no_tqdm_means_no_progress_bar_and_one_warning(hide, capsys):
    hide("tqdm")
    assert list(progress_bar(range(3), True, "epoch 1")) == [0, 1, 2]
    assert list(progress_bar(range(2), True, "epoch 2")) == [0, 1]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['warning: tqdm is not installed, so there is no progress bar (pip install "logo-attn[train]")']


def test_no_matplotlib_means_no_png_and_one_warning(hide, tmp_path, capsys):
    hide("matplotlib")
    metrics = {"uar": 0.5, "war": 0.5, "confusion_matrix": [[1, 1], [0, 2]]}
    for stem in ("val", "test"):
        write_report(metrics, ["a", "b"], tmp_path, stem, "title")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_metrics.json", "val_metrics.json"]
    assert json.loads((tmp_path / "test_metrics.json").read_text()) == metrics
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['warning: matplotlib is not installed, so no confusion-matrix PNG is written '
                   '(pip install "logo-attn[train]")']


def test_the_run_config_is_written_without_pyyaml_and_reads_back(hide, tmp_path):
    config = make_config({"dataset": "list", "train_list": "a b.txt", "test_list": "ü.txt", "lr": 1e-5,
                          "window": (1, 2, 3), "frames_dir": None, "progress": False})
    hide("yaml")
    write_config(config, tmp_path / "config.yaml")
    sys.modules.pop("yaml")  # reading it back is PyYAML's job
    assert parse_config(["--config", str(tmp_path / "config.yaml")]) == config
    assert parse_config(["--config", str(tmp_path / "config.yaml")]) != TrainConfig()


def test_the_install_command_names_this_distribution_and_its_extras():
    # what `pip install "logo-attn[<extra>]"` installs: the extra's requirements in the installed metadata
    dist = metadata.distribution(optional.DISTRIBUTION)
    assert dist.metadata["Name"].replace("_", "-").lower() == optional.DISTRIBUTION
    requires = dist.requires or []
    for module, (package, extra) in optional.PACKAGES.items():
        assert extra in dist.metadata.get_all("Provides-Extra"), extra
        pip_name = {"PyAV": "av"}.get(package, package).lower()
        brought = [r for r in requires if re.match(rf"{re.escape(pip_name)}\b", r.lower()) and f'extra == "{extra}"' in r]
        assert brought, f"extra {extra} of {optional.DISTRIBUTION} does not bring {package} (for import {module})"
        assert optional.install_command(module) == f'pip install "{optional.DISTRIBUTION}[{extra}]"'


def test_real_modules_are_used_when_present():
    assert optional.require("yaml", "x").safe_load("a: 1") == {"a": 1}
    assert optional.optional("tqdm", "x") is sys.modules["tqdm"]
