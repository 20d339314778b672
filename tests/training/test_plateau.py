"""ChancePlateau: a run stuck at chance is reported once its plateau lasts, a learning run never is."""

from __future__ import annotations

import math

import pytest

from lsync.training.plateau import ChancePlateau


def feed(watch: ChancePlateau, rows) -> list[tuple[int, str]]:
    """Feed (step, accuracy, auc, loss) rows; returns (step, message) for every warning given."""
    warnings = []
    for step, accuracy, auc, loss in rows:
        message = watch.update(step, accuracy, auc, loss)
        if message is not None:
            warnings.append((step, message))
    return warnings


def test_a_run_at_chance_is_reported_once_when_the_plateau_lasts():
    # the classic "loss stuck at 0.69": validation every 100 steps, accuracy and AUC wobbling around 0.5
    rows = [(step, 0.5 + 0.02 * math.sin(step), 0.5 - 0.03 * math.cos(step), 0.693) for step in range(100, 3001, 100)]
    watch = ChancePlateau(patience_steps=1000, hints=["a logit scale", "a larger learning rate"])
    warnings = feed(watch, rows)
    assert [step for step, _ in warnings] == [1000]  # once, at the first validation 1000 steps in
    message = warnings[0][1]
    assert "1000 steps" in message and "0.693" in message
    assert "Try: a logit scale; a larger learning rate" in message
    assert watch.reports == [{"step": 1000, "since_step": 0, "accuracy": rows[9][1], "roc_auc": rows[9][2],
                              "loss": 0.693}]


def test_a_learning_run_is_never_reported():
    rows = [(step, min(0.95, 0.5 + step / 4000), min(0.99, 0.5 + step / 3000), 0.69 - step / 10000)
            for step in range(100, 3001, 100)]
    assert feed(ChancePlateau(patience_steps=300), rows) == []


def test_an_accuracy_of_one_half_with_a_good_auc_is_not_chance():
    # every cosine on one side of 0.5 gives accuracy 0.5, but the ranking already separates the pairs
    rows = [(step, 0.5, 0.85, 0.9) for step in range(100, 2001, 100)]
    assert feed(ChancePlateau(patience_steps=500), rows) == []


def test_a_collapse_after_learning_is_counted_from_the_last_good_validation():
    rows = [(step, 0.8, 0.9, 0.4) for step in range(100, 1001, 100)]
    rows += [(step, 0.5, 0.5, 0.693) for step in range(1100, 3001, 100)]
    warnings = feed(ChancePlateau(patience_steps=800), rows)
    assert [step for step, _ in warnings] == [1800]  # 800 steps after step 1000, the last one above chance
    assert "stuck at chance for 800 steps" in warnings[0][1]


def test_leaving_and_falling_back_is_reported_again():
    rows = [(step, 0.5, 0.5, 0.69) for step in range(100, 601, 100)]
    rows += [(700, 0.7, 0.8, 0.5)]
    rows += [(step, 0.5, 0.5, 0.69) for step in range(800, 1401, 100)]
    warnings = feed(ChancePlateau(patience_steps=500), rows)
    assert [step for step, _ in warnings] == [500, 1200]


@pytest.mark.parametrize("auc", [None, float("nan")])
def test_without_an_auc_the_accuracy_decides(auc):
    watch = ChancePlateau(patience_steps=200)
    assert watch.update(100, 0.51, auc) is None
    assert watch.update(200, 0.49, auc) is not None


def test_patience_zero_switches_the_watch_off():
    rows = [(step, 0.5, 0.5, 0.693) for step in range(100, 5001, 100)]
    assert feed(ChancePlateau(patience_steps=0), rows) == []
