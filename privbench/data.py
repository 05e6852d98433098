"""Built-in data sets (no download): split once, by seed, into train, test and a population pool.

The population pool is disjoint from train and test; attacks draw their reference and non-member
records from it, so no attack ever needs the target's own test labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from privbench.datasets import DATA_SETS, names_of
from privbench.federation_gen import load_synthetic
from privbench.spec import DataSpec


@dataclass(frozen=True)
class SplitData:
    """Feature matrices (float32) and integer labels for the three disjoint parts."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_pop: np.ndarray
    y_pop: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def fingerprint(self) -> str:
        """A short hash of every array, so a result can name the exact data it used."""
        import hashlib

        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_test, self.y_test, self.x_pop, self.y_pop):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


# name -> (loader, whether features need standardising with train statistics, description); the
# names and descriptions are the data-set registry's tabular entries (privbench/datasets.py).
_LOADERS = {"digits": (_digits, False), "breast_cancer": (_breast_cancer, True),
            "synthetic_federation": (load_synthetic, False)}
DATASETS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], bool, str]] = {
    name: (*_LOADERS[name], DATA_SETS.get(name).description) for name in names_of("tabular")}


def load_split(spec: DataSpec, seed: int) -> SplitData:
    """Load a built-in data set and split it by seed (stratified) into train, test, population."""
    loader, standardise, _ = DATASETS[spec.name]
    x, y = loader()
    held = spec.test_fraction + spec.population_fraction
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=held, random_state=seed, stratify=y
    )
    x_test, x_pop, y_test, y_pop = train_test_split(
        x_rest, y_rest, test_size=spec.population_fraction / held,
        random_state=seed + 1, stratify=y_rest,
    )
    if standardise:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0) + 1e-6
        x_train, x_test, x_pop = ((a - mean) / std for a in (x_train, x_test, x_pop))
    return SplitData(
        name=spec.name,
        x_train=x_train.astype(np.float32), y_train=y_train,
        x_test=x_test.astype(np.float32), y_test=y_test,
        x_pop=x_pop.astype(np.float32), y_pop=y_pop,
        n_classes=int(y.max()) + 1,
    )
