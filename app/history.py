"""Loss history for the chart: train and validation points, decimated for long runs (no Qt)."""
from __future__ import annotations

import math

import numpy as np


def _finite_float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class _Series:
    """Growing float64 columns ``(step, loss)``; capacity doubles, so appends are amortised O(1)
    and reading the points is a view, not a list-to-array copy of the whole run."""

    def __init__(self) -> None:
        self._data = np.empty((2, 256), dtype=np.float64)
        self.n = 0

    def append(self, step: float, loss: float) -> None:
        if self.n == self._data.shape[1]:
            grown = np.empty((2, 2 * self.n), dtype=np.float64)
            grown[:, :self.n] = self._data
            self._data = grown
        self._data[0, self.n] = step
        self._data[1, self.n] = loss
        self.n += 1

    @property
    def steps(self) -> np.ndarray:
        return self._data[0, :self.n]

    @property
    def losses(self) -> np.ndarray:
        return self._data[1, :self.n]


class LossHistory:
    """Points ``(step, loss)`` for training and validation. ``version`` changes on every
    change, so a view redraws only when something is new."""

    def __init__(self) -> None:
        self._train = _Series()
        self._valid = _Series()
        self.version = 0

    # Read-only views (numpy arrays) of the points so far.
    train_steps = property(lambda self: self._train.steps)
    train_loss = property(lambda self: self._train.losses)
    valid_steps = property(lambda self: self._valid.steps)
    valid_loss = property(lambda self: self._valid.losses)

    def clear(self) -> None:
        version = self.version  # never goes back, so a view cannot mistake new data for old
        self.__init__()
        self.version = version + 1

    def add_train(self, step, loss) -> None:
        v = _finite_float(loss)
        if v is None:
            return
        self._train.append(float(step), v)
        self.version += 1

    def add_valid(self, step, loss) -> None:
        v = _finite_float(loss)
        if v is None:
            return
        self._valid.append(float(step), v)
        self.version += 1

    def load(self, loss_history: dict | None) -> None:
        """Replace the points with a manifest's ``loss_history`` ({train, valid: [[step, loss]]})."""
        self.clear()
        for step, loss in (loss_history or {}).get("train", []):
            self.add_train(step, loss)
        for step, loss in (loss_history or {}).get("valid", []):
            self.add_valid(step, loss)

    def __len__(self) -> int:
        return self._train.n

    def train_curve(self, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        return decimate(self.train_steps, self.train_loss, max_points)

    def valid_curve(self, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        return decimate(self.valid_steps, self.valid_loss, max_points)


def decimate(xs, ys, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points: bucket means, so a 100k-step run draws as fast as a short
    one and keeps its shape (the last point is always the latest value)."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max_points - 1
    usable = (n - 1) // buckets * buckets
    xm = x[:usable].reshape(buckets, -1).mean(axis=1)
    ym = y[:usable].reshape(buckets, -1).mean(axis=1)
    return np.append(xm, x[-1]), np.append(ym, y[-1])
