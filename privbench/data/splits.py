"""Data sets split once, by seed, into train, test and a population pool: the built-in ones (no
download) and a user's table or image folder (privbench/data/user_data.py).

The population pool is disjoint from train and test; attacks draw their reference and non-member
records from it, so no attack ever needs the target's own test labels. A user's records that name
their client are split within each client, so every client keeps training records and trains as
the client it is (`SplitData.train_clients`, which `partition` honours).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from privbench.data.federation_gen import load_synthetic
from privbench.data.registry import DATA_SETS, builtin_names
from privbench.data.shape import DataShape
from privbench.errors import PrivbenchError
from privbench.spec.schema import DataSpec


@dataclass(frozen=True)
class SplitData:
    """Feature matrices (float32) and integer labels for the three disjoint parts; a user's
    records that name their clients carry each training record's client (`train_clients`), an
    image data set its (height, width)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_pop: np.ndarray
    y_pop: np.ndarray
    n_classes: int
    train_clients: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None

    @property
    def n_features(self) -> int:
        """The number of input features (columns of x_train)."""
        return int(self.x_train.shape[1])

    def fingerprint(self) -> str:
        """A short hash of every array, so a result can name the exact data it used."""
        import hashlib

        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_test, self.y_test, self.x_pop, self.y_pop):
            h.update(np.ascontiguousarray(arr).tobytes())
        if self.train_clients is not None:
            h.update(np.ascontiguousarray(self.train_clients).tobytes())
        return h.hexdigest()[:16]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


# name -> (loader, whether features need standardising with train statistics, description); the
# names and descriptions are the data-set registry's built-in tabular entries (datasets.py).
_LOADERS = {"digits": (_digits, False), "breast_cancer": (_breast_cancer, True),
            "synthetic_federation": (load_synthetic, False)}
DATASETS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], bool, str]] = {
    name: (*_LOADERS[name], DATA_SETS.get(name).description)
    for name in builtin_names("tabular")}
IMAGE_SHAPES = {"digits": (8, 8)}  # the built-in image data sets, given flat


def load_split(spec: DataSpec, seed: int) -> SplitData:
    """Load a data set (built-in, or the user's table or image folder) and split it by seed into
    train, test and population: stratified by label, or within each client when the user's
    records name their clients.

    Args:
        spec: the spec's data table.
        seed: the split's seed.

    Returns:
        The split. A user's files that cannot be read or split raise a one-line PrivbenchError.
    """
    if DATA_SETS.get(spec.name).path:
        return _user_split(spec, seed)
    loader, standardise, _ = DATASETS[spec.name]
    x, y = loader()
    return _stratified(spec, spec.name, x, y, seed, standardise, IMAGE_SHAPES.get(spec.name))


def _stratified(spec: DataSpec, name: str, x: np.ndarray, y: np.ndarray, seed: int,
                standardise: bool, image_shape: tuple[int, int] | None) -> SplitData:
    held = spec.test_fraction + spec.population_fraction
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=held, random_state=seed, stratify=y
    )
    x_test, x_pop, y_test, y_pop = train_test_split(
        x_rest, y_rest, test_size=spec.population_fraction / held,
        random_state=seed + 1, stratify=y_rest,
    )
    return _finish(name, (x_train, y_train), (x_test, y_test), (x_pop, y_pop),
                   int(y.max()) + 1, standardise, None, image_shape)


def _finish(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
            pop: tuple[np.ndarray, np.ndarray], n_classes: int, standardise: bool,
            train_clients: np.ndarray | None,
            image_shape: tuple[int, int] | None) -> SplitData:
    (x_train, y_train), (x_test, y_test), (x_pop, y_pop) = train, test, pop
    if standardise:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0) + 1e-6
        x_train, x_test, x_pop = ((a - mean) / std for a in (x_train, x_test, x_pop))
    return SplitData(
        name=name,
        x_train=x_train.astype(np.float32), y_train=y_train,
        x_test=x_test.astype(np.float32), y_test=y_test,
        x_pop=x_pop.astype(np.float32), y_pop=y_pop,
        n_classes=n_classes, train_clients=train_clients, image_shape=image_shape,
    )


def _user_split(spec: DataSpec, seed: int) -> SplitData:
    from privbench.data.user_data import read_records

    records = read_records(spec)
    name = f"{spec.name}:{Path(spec.path or '').name}"
    standardise = records.image_shape is None  # a table's columns have their own scales
    n_classes = len(records.label_names)
    if records.clients is None:
        try:
            return _stratified(spec, name, records.x, records.y, seed, standardise,
                               records.image_shape)
        except ValueError as e:  # a class too small to stratify, or too few records
            raise PrivbenchError(
                f"data.path: {Path(spec.path or '').name}: cannot split its {len(records.y)} "
                f"records of {n_classes} classes by class into train, test and population "
                f"({str(e).splitlines()[0]}); add records or lower data.test_fraction and "
                "data.population_fraction") from None
    rng = np.random.default_rng([seed, 0xC11E])
    held = spec.test_fraction + spec.population_fraction
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in range(len(records.client_names)):
        idx = rng.permutation(np.flatnonzero(records.clients == c))
        n_held = min(len(idx) - 1, round(held * len(idx)))  # every client keeps a record
        n_test = round(n_held * spec.test_fraction / held)
        for part, chosen in zip(parts, (idx[n_held:], idx[:n_test], idx[n_test:n_held]),
                                strict=True):
            part.append(chosen)
    train, test, pop = (np.sort(np.concatenate(p)) for p in parts)
    if not len(test) or not len(pop):
        raise PrivbenchError(
            f"data.path: the {len(records.client_names)} clients of {Path(spec.path or '').name}"
            " hold too few records to hold out test and population records; add records or "
            "raise data.test_fraction and data.population_fraction")
    x, y = records.x, records.y
    return _finish(name, (x[train], y[train]), (x[test], y[test]), (x[pop], y[pop]), n_classes,
                   standardise, records.clients[train], records.image_shape)


def data_shape(spec: DataSpec) -> DataShape:
    """The shape of the spec's data set: a built-in's from its size, a user's from its split
    (its files read once per file state, privbench/data/user_data.py).

    Raises:
        PrivbenchError: one line naming the file and the fix when a user's files cannot be read
            or split.
    """
    info = DATA_SETS.get(spec.name)
    if not info.path:
        size = int(info.records or 0)
        held = spec.test_fraction + spec.population_fraction
        n_features, n_classes = _builtin_features_classes(spec.name)
        return DataShape(spec.name, size - math.ceil(held * size),
                         math.floor(spec.population_fraction * size), n_features, n_classes)
    from privbench.data.user_data import path_state
    if spec.name == "stream":  # read per cohort: its shape comes from its client index
        from privbench.data.stream_split import stream_shape

        return stream_shape(spec)

    state = path_state(Path(spec.path)) if spec.path else ()
    return _user_shape(spec.model_dump_json(), state)


@functools.lru_cache(maxsize=8)
def _builtin_features_classes(name: str) -> tuple[int, int]:
    x, y = DATASETS[name][0]()
    return int(x.shape[1]), int(y.max()) + 1


@functools.lru_cache(maxsize=32)
def _user_shape(spec_json: str, _state: tuple) -> DataShape:
    spec = DataSpec.model_validate_json(spec_json)
    split = load_split(spec, 0)  # the counts do not depend on the seed
    clients = None if split.train_clients is None else int(split.train_clients.max()) + 1
    return DataShape(Path(spec.path or "").name, len(split.y_train), len(split.y_pop),
                     split.n_features, split.n_classes, clients)
