"""UAR / WAR / confusion matrix / per-class recall against hand-computed cases."""

import math

import pytest
import torch

from logo_attn.logoformer.metrics import confusion_matrix, format_recalls, per_class_recall, plot_confusion_matrix, uar_war


def test_confusion_matrix_by_hand():
    targets = [0, 0, 0, 1, 1, 2]
    preds = [0, 1, 0, 1, 2, 2]
    expected = torch.tensor([[2, 1, 0],
                             [0, 1, 1],
                             [0, 0, 1]])
    assert torch.equal(confusion_matrix(preds, targets, 3), expected)


def test_uar_war_by_hand():
    # class 0: 2/3, class 1: 1/2, class 2: 1/1 -> UAR = (2/3 + 1/2 + 1) / 3; WAR = 4/6
    uar, war = uar_war(torch.tensor([0, 1, 0, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 2]), 3)
    assert uar == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert war == pytest.approx(4 / 6)


def test_uar_skips_classes_absent_from_targets():
    # 4 classes, only 0 and 2 occur; predictions into the absent class 3 still count as errors
    uar, war = uar_war([0, 3, 2, 2], [0, 0, 2, 2], 4)
    assert uar == pytest.approx((1 / 2 + 1) / 2)
    assert war == pytest.approx(3 / 4)


def test_imbalanced_majority_guess_separates_uar_from_war():
    targets = [0] * 9 + [1]
    uar, war = uar_war([0] * 10, targets, 2)
    assert war == pytest.approx(0.9) and uar == pytest.approx(0.5)


def test_per_class_recall_nan_for_absent_class():
    recall = per_class_recall(confusion_matrix([0, 1, 1], [0, 1, 0], 3))
    assert recall[0].item() == pytest.approx(0.5) and recall[1].item() == 1.0 and math.isnan(recall[2].item())
    assert "n/a" in format_recalls(confusion_matrix([0, 1, 1], [0, 1, 0], 3), ["a", "b", "c"]).splitlines()[2]


@pytest.mark.parametrize("preds, targets, message", [
    ([0, 3], [0, 1], r"preds must lie in \[0, 3\)"),
    ([0, 1], [0, -1], r"targets must lie in \[0, 3\)"),
    ([0, 1, 2], [0, 1], "same length"),
    ([[0, 1]], [[0, 1]], "1-D"),
    ([0.0, 1.0], [0, 1], "1-D sequence of class indices"),
])
def test_bad_input(preds, targets, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(preds, targets, 3)


def test_empty_input_has_no_metrics():
    with pytest.raises(ValueError, match="at least one sample"):
        uar_war([], [], 3)


def test_plot_writes_png(tmp_path):
    matrix = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    path = plot_confusion_matrix(matrix, ["a", "b", "c"], tmp_path / "sub" / "cm.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(matrix, ["a", "b"], tmp_path / "x.png")
