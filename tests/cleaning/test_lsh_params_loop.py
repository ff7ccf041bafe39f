"""lsh_params reuses grid**r across band counts and slices instead of masks; pinned to the plain double loop
over (bands, rows) it replaced, on thresholds and permutation counts around the usual ones."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tracegen.cleaning.minhash import lsh_params


def _area(y: npt.NDArray[np.float64], x: npt.NDArray[np.float64]) -> float:
    if x.size < 2:
        return 0.0
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2.0)


def _plain_loop(threshold: float, num_perm: int) -> tuple[int, int]:
    grid = np.linspace(0.0, 1.0, 2001)
    best = (float("inf"), 1, 1)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1.0 - (1.0 - grid**r) ** b
            lo = grid <= threshold
            err = 0.5 * _area(p[lo], grid[lo]) + 0.5 * _area(1.0 - p[~lo], grid[~lo])
            if err < best[0]:
                best = (err, b, r)
    return best[1], best[2]


@pytest.mark.parametrize("num_perm", [1, 2, 16, 128])
def test_lsh_params_equals_plain_loop(num_perm: int) -> None:
    for threshold in [0.0, 0.0004, 0.05, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.9995, 1.0]:
        assert lsh_params.__wrapped__(threshold, num_perm) == _plain_loop(threshold, num_perm)
