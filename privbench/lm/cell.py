"""A language-model cell: load text and model, fine-tune privately, score. Called by run_cell."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from privbench.lm.pretrained import default_model_folder, load_model, load_tokenizer
from privbench.lm.scorers import LM_SCORERS, LMContext
from privbench.lm.textdata import load_text_data
from privbench.lm.tokens import sequence_tensors
from privbench.results import CellResult
from privbench.spec import CellSpec
from privbench.suite import Cell
from privbench.trained import TrainedModel
from privbench.trainers.lm import Examples, prepare_for_finetuning, train_lm


def model_folder(spec: CellSpec) -> Path:
    """The user's model folder (model.path) or the cached, locally pretrained tiny GPT-2."""
    if spec.model.path:
        return Path(spec.model.path)
    return default_model_folder(spec.lm, spec.seed)


def examples(tokenizer, texts: list[str], labels, clients, max_length: int) -> Examples:
    ids, weights = sequence_tensors(tokenizer, texts, max_length)
    return Examples(ids, weights, torch.as_tensor(labels, dtype=torch.long),
                    torch.as_tensor(clients, dtype=torch.long))


def run_lm_cell(cell: Cell, start: float, on_round: Callable[[int, int], None] | None = None
                ) -> tuple[CellResult, TrainedModel]:
    """Fine-tune and score one LM cell (timed from `start`); returns its result and model."""
    spec = cell.spec
    lm = spec.lm
    if spec.task != "causal_lm":  # canaries are secrets in text a model generates: LMs only
        lm = lm.model_copy(update={"canaries": lm.canaries.model_copy(update={"count": 0})})
    data = load_text_data(spec.data, lm, spec.seed)
    folder = model_folder(spec)
    tokenizer = load_tokenizer(folder)
    torch.manual_seed(spec.seed)
    model = load_model(folder, spec.task, len(data.label_names))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model = prepare_for_finetuning(model, spec.lm, spec.task)
    train = examples(tokenizer, data.train_texts, data.train_labels, data.train_clients,
                     spec.lm.max_length)
    test = examples(tokenizer, data.test_texts, data.test_labels,
                    [-1] * len(data.test_texts), spec.lm.max_length)
    trained = train_lm(model, spec.task, train, data.n_clients, spec.train, spec.privacy,
                       spec.lm, spec.seed, on_round=on_round)
    ctx = LMContext(cell=cell, data=data, tokenizer=tokenizer, train=train, test=test,
                    trained=trained)
    metrics = [row for scorer in LM_SCORERS for row in scorer(ctx)]
    result = CellResult(
        key=cell.key, label=cell.label, axes=cell.axes, status="ok", spec=spec.model_dump(),
        seconds=time.perf_counter() - start, claim=trained.claim.model_dump(), metrics=metrics,
        history=trained.history, data_fingerprint=data.fingerprint())
    return result, trained
