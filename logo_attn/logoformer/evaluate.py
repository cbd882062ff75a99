"""Evaluate a trained checkpoint: ``python -m logo_attn.evaluate runs/dfew-logo/best.pt``.

The checkpoint carries its training settings, so the same data pipeline and model are rebuilt;
flags may point at another copy of the data (``--root``, ``--fold``, ``--test-list``) or change how it
runs (``--batch-size``, ``--workers``, ``--backend``, ``--device``). Prints UAR, WAR and per-class recall,
and writes ``<split>_metrics.json`` and a confusion-matrix PNG into ``--out-dir`` (default: the
checkpoint's folder). Runs under ``torchrun`` too (each process evaluates a share of the clips).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from .checkpoints import load_checkpoint, load_weights
from .config import TrainConfig, make_config
from .distributed import Runtime
from .errors import UsageError, run_command
from .reports import evaluate_split, format_metrics, write_report
from .train import build_datasets, build_model

# Settings that may differ from training without changing what is evaluated.
OVERRIDABLE = ("root", "fold", "frames_dir", "train_list", "val_list", "test_list", "batch_size", "workers",
               "backend", "device", "amp", "progress")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m logo_attn.evaluate", description=__doc__.split("\n\n")[0],
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("checkpoint", help="best.pt or last.pt written by logo_attn.train")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="which split to evaluate")
    parser.add_argument("--out-dir", "--out_dir", dest="out_dir", help="where to write the report")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in OVERRIDABLE:
        field = fields[name]
        names = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        if isinstance(field.default, bool):
            parser.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction, help=field.metadata["help"])
        else:
            parser.add_argument(*names, dest=name, type=int if isinstance(field.default, int) else str,
                                help=field.metadata["help"])
    return parser


def evaluate(checkpoint: str | Path, split: str = "test", out_dir: str | Path | None = None, **overrides) -> dict:
    """Metrics of `checkpoint` on `split`; writes the report files on the main process."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        raise UsageError(f"checkpoint {checkpoint} is a directory; give the file, e.g. {checkpoint / 'best.pt'}")
    saved = load_checkpoint(checkpoint)
    config: TrainConfig = make_config({**saved["config"], **overrides}, str(checkpoint))
    runtime = Runtime(config)
    try:
        _, val_set, test_set, class_names = build_datasets(config)
        dataset = test_set if split == "test" else val_set
        model = build_model(dataclasses.replace(config, backbone_weights=None), len(class_names))
        load_weights(model, saved, checkpoint)
        model.to(runtime.device)
        metrics = evaluate_split(model, dataset, class_names, config, runtime, split)
        metrics["checkpoint_epoch"] = saved["epoch"]
        if runtime.is_main:
            folder = Path(out_dir) if out_dir is not None else checkpoint.parent
            folder.mkdir(parents=True, exist_ok=True)
            write_report(metrics, class_names, folder, split, f"{config.dataset} {split}, {config.attention}")
            print(format_metrics(metrics, class_names, f"{checkpoint} on {split}"), file=sys.stderr)
        return metrics
    finally:
        runtime.close()


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error prints one line ``error: ...`` and exits with status 2."""

    def command(argv):
        args = vars(build_parser().parse_args(argv))
        evaluate(args.pop("checkpoint"), args.pop("split", "test"), args.pop("out_dir", None), **args)

    run_command(command, argv)


if __name__ == "__main__":
    main()
