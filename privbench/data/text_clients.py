"""Private text for fine-tuning: generated support messages or a user's JSONL folder, per client,
split into train and held-out messages, with canaries planted in the training part."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from privbench.data.text_corpus import (
    CANARY_PREFIXES,
    CORPUS_VERSION,
    TOPICS,
    canary_text,
    client_profile,
    private_messages,
)
from privbench.errors import PrivbenchError
from privbench.spec.lm_schema import CanarySpec, LMSpec
from privbench.spec.schema import DataSpec


@dataclass(frozen=True)
class Canary:
    """A planted secret: its template prefix, digits, owner, repetitions and inclusion bit."""

    id: int
    prefix: str
    secret: str
    client: int
    repetitions: int
    included: bool

    @property
    def text(self) -> str:
        return canary_text(self.prefix, self.secret)


@dataclass
class TextData:
    """Train messages (with their client and label), held-out messages, and the canaries."""

    name: str
    train_texts: list[str]
    train_clients: np.ndarray
    train_labels: np.ndarray
    train_is_canary: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    n_clients: int
    label_names: list[str]
    canaries: list[Canary] = field(default_factory=list)
    test_clients: np.ndarray | None = None  # each held-out message's client (shadow attacks)

    def fingerprint(self) -> str:
        """A short hash of every text, label and canary, naming the exact data a cell used."""
        h = hashlib.sha256()
        h.update(json.dumps([self.train_texts, self.test_texts]).encode())
        for arr in (self.train_clients, self.train_labels, self.test_labels):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(json.dumps([c.__dict__ for c in self.canaries]).encode())
        return h.hexdigest()[:16]


def load_text_data(data: DataSpec, lm: LMSpec, seed: int) -> TextData:
    """The cell's text: generated (support_messages) or read from `data.path` (jsonl)."""
    if data.name == "support_messages":
        per_client, labels = _generated(data.clients, lm.messages_per_client, seed)
        name = f"support_messages-v{CORPUS_VERSION}"
    else:
        per_client, labels = _jsonl_folder(Path(data.path or ""), data.clients)
        name = f"jsonl:{data.path}"
    return _split_and_plant(name, per_client, labels, data.test_fraction, lm.canaries, seed)


def _generated(n_clients: int, n_messages: int, seed: int) -> tuple[list[list[tuple[str, int]]],
                                                                     list[str]]:
    clients = [msgs for _, msgs in _generated_clients(n_clients, n_messages, seed)]
    return clients, list(TOPICS)


def _generated_clients(n_clients: int, n_messages: int, seed: int
                       ) -> list[tuple[dict[str, str], list[tuple[str, int]]]]:
    """Each generated client's profile and messages, from the corpus stream."""
    rng = np.random.default_rng([seed, 0x7E47])
    out = []
    for c in range(n_clients):
        profile = client_profile(rng, c)
        out.append((profile, private_messages(profile, n_messages, rng)))
    return out


POPULATION_STREAM = 0x7E48  # the salt of the population messages' own stream


def population_messages(data: DataSpec, lm: LMSpec, seed: int,
                        counts: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """Fresh messages of the generated clients, never trained on: `counts[c]` more written by
    client c, from its own profile by the generator that wrote its real ones (a stream of their
    own, so the cell's data are unchanged; like a held-out message, one may repeat a real
    message's text, the generator's templates being few). They are the population the shadow
    attacks draw non-members from (attacks/membership/lm_shadows.py); None for a user's folder,
    which has no population beyond its held-out messages.

    Args:
        data, lm: the cell's data and LM specs; seed: the spec's seed;
        counts: (clients,) how many messages to write for each client.
    Returns:
        (texts, their clients, their labels), or None when the data are not generated.
    """
    if data.name != "support_messages":
        return None
    rng = np.random.default_rng([seed, POPULATION_STREAM])
    texts, clients, labels = [], [], []
    for c, (profile, _) in enumerate(_generated_clients(data.clients, lm.messages_per_client,
                                                        seed)):
        for text, label in private_messages(profile, int(counts[c]), rng):
            texts.append(text)
            clients.append(c)
            labels.append(label)
    return texts, np.array(clients, dtype=np.int64), np.array(labels, dtype=np.int64)


def _jsonl_folder(folder: Path, max_clients: int) -> tuple[list[list[tuple[str, int]]],
                                                           list[str]]:
    """One client per .jsonl file (sorted by name); each line {"text": ..., "label"?: ...}."""
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise PrivbenchError(f"data.path = {str(folder)!r}: no .jsonl files there; write one "
                             "file per client, one {\"text\": ...} object a line")
    files = files[:max_clients]
    raw: list[list[tuple[str, object]]] = []
    for f in files:
        rows = []
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise PrivbenchError(f"data.path: {f.name}: not UTF-8 text (byte {e.start}); save it "
                                 "as UTF-8 JSONL") from None
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise PrivbenchError(f"data.path: {f.name} line {i}: not JSON ({e.msg}); write "
                                     "one JSON object a line") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise PrivbenchError(f"data.path: {f.name} line {i}: needs a string \"text\" "
                                     "field")
            rows.append((obj["text"], obj.get("label", "none")))
        if len(rows) < 2:
            raise PrivbenchError(f"data.path: {f.name} has {len(rows)} message(s); each client "
                                 "needs at least 2 (one is held out)")
        raw.append(rows)
    names = sorted({str(lab) for rows in raw for _, lab in rows})
    index = {n: i for i, n in enumerate(names)}
    return [[(t, index[str(lab)]) for t, lab in rows] for rows in raw], names


def jsonl_folder_problem(folder: Path, max_clients: int) -> str | None:
    """The first problem of a JSONL folder, in one line, or None: read once per folder state.

    Called while the spec is checked, before any cell starts, so that a bad file is reported once
    instead of inside every worker after training set-up. Cached by the files' names, sizes and
    modification times, so checking many cells of one suite reads the folder once.
    """
    files = sorted(folder.glob("*.jsonl"))
    state = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _cached_problem(str(folder), max_clients, state)


@functools.lru_cache(maxsize=32)
def _cached_problem(folder: str, max_clients: int, _state: tuple) -> str | None:
    try:
        _jsonl_folder(Path(folder), max_clients)
    except PrivbenchError as e:
        return str(e)
    return None


def _split_and_plant(name: str, per_client: list[list[tuple[str, int]]], label_names: list[str],
                     test_fraction: float, canaries: CanarySpec, seed: int) -> TextData:
    rng = np.random.default_rng([seed, 0x5911])
    train, test, test_clients = [], [], []
    for c, msgs in enumerate(per_client):
        order = rng.permutation(len(msgs))
        n_test = min(len(msgs) - 1, max(1, round(test_fraction * len(msgs))))
        test += [msgs[i] for i in order[:n_test]]
        test_clients += [c] * n_test
        train += [(msgs[i][0], msgs[i][1], c, False) for i in order[n_test:]]
    planted = draw_text_canaries(canaries, len(per_client), seed)
    for can in planted:
        if can.included:
            train += [(can.text, 0, can.client, True)] * can.repetitions
    return TextData(
        name=name,
        train_texts=[t for t, _, _, _ in train],
        train_clients=np.array([c for _, _, c, _ in train], dtype=np.int64),
        train_labels=np.array([lab for _, lab, _, _ in train], dtype=np.int64),
        train_is_canary=np.array([k for _, _, _, k in train], dtype=bool),
        test_texts=[t for t, _ in test],
        test_labels=np.array([lab for _, lab in test], dtype=np.int64),
        n_clients=len(per_client),
        label_names=label_names,
        canaries=planted,
        test_clients=np.array(test_clients, dtype=np.int64),
    )


def draw_text_canaries(spec: CanarySpec, n_clients: int, seed: int) -> list[Canary]:
    """`spec.count` canaries with distinct random secrets; each included with `spec.inclusion`."""
    rng = np.random.default_rng([seed, 0xCA9A])
    secrets: set[str] = set()
    out = []
    for i in range(spec.count):
        while True:
            secret = "".join(str(d) for d in rng.integers(0, 10, size=spec.digits))
            if secret not in secrets:
                break
        secrets.add(secret)
        out.append(Canary(
            id=i, prefix=CANARY_PREFIXES[i % len(CANARY_PREFIXES)], secret=secret,
            client=int(rng.integers(n_clients)),
            repetitions=spec.repetitions[i % len(spec.repetitions)],
            included=bool(rng.random() < spec.inclusion)))
    return out
