"""The mouth-follows-audio correlation: Pearson r over lags, NaN frames left out, the sign of the lag."""

from __future__ import annotations

import numpy as np
import pytest

from lsync.mouth_metrics import MIN_FRAMES, best_lag_correlation, lagged_pair, pearson


def test_pearson_ignores_nan_frames_and_is_undefined_for_constant_or_short_series():
    x = np.array([0.0, 1.0, 2.0, 3.0, np.nan, 5.0, 6.0, 7.0, 8.0, 9.0])
    assert pearson(x, 2 * np.nan_to_num(x) + 1) == pytest.approx(1.0)
    assert pearson(np.ones(20), np.arange(20.0)) is None
    assert pearson(np.arange(MIN_FRAMES - 1.0), np.arange(MIN_FRAMES - 1.0)) is None


def test_lagged_pair_pairs_opening_t_with_loudness_t_minus_lag():
    opening, loudness = np.arange(10), np.arange(100, 108)
    a, b = lagged_pair(opening, loudness, 2)
    assert list(zip(a, b))[:2] == [(2, 100), (3, 101)] and len(a) == len(b) == 8
    a, b = lagged_pair(opening, loudness, -3)
    assert list(zip(a, b))[:2] == [(0, 103), (1, 104)] and len(a) == len(b) == 5


def test_best_lag_finds_a_mouth_that_trails_the_sound():
    rng = np.random.default_rng(0)
    loudness = rng.random(200)
    opening = np.r_[np.zeros(2), loudness[:-2]] + 0.05 * rng.random(200)  # frame t opens with the sound of t - 2
    fit = best_lag_correlation(opening, loudness, max_lag=3)
    assert fit.lag == 2 and fit.r > 0.95
    assert fit.by_lag[0] < 0.3 and set(fit.by_lag) == set(range(-3, 4))
    # beyond the lags searched nothing is found
    assert best_lag_correlation(opening, loudness, max_lag=1).r < 0.3


def test_unrelated_series_score_near_zero_and_missing_faces_do_not_count():
    rng = np.random.default_rng(1)
    opening, loudness = rng.random(300), rng.random(300)
    assert abs(best_lag_correlation(opening, loudness).r) < 0.25
    opening[::3] = np.nan
    assert best_lag_correlation(opening, loudness).frames == 200
