"""The language-model task: a Hugging Face adapter and tokenised client text for the one trainer.

The model comes from the user's folder (`model.path`) or the cached, locally pretrained tiny
GPT-2; the client data are the tokenised training messages grouped by client; the round monitor
watches the next-token accuracy on generated public text (the pretraining corpus's distribution,
never a client's message). The LM scorers read an `LMContext`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from privbench.attacks.exposure_lm import exposure_problem
from privbench.attacks.language_scorers import LMContext
from privbench.attacks.membership.lm_inputs import TrainerInputs
from privbench.audit.canaries import (
    CanarySet,
    plant_adapter_dirac_canaries,
    plant_canary_clients,
    plants_dirac,
)
from privbench.audit.lm_canaries import plant_secret_canaries, plants_secret_canaries
from privbench.data.partition import ClientShard
from privbench.data.text_clients import load_text_data
from privbench.data.text_corpus import public_corpus
from privbench.data.tokens import Examples, examples
from privbench.errors import PrivbenchError
from privbench.models.hf import HFAdapter, prepare_for_finetuning
from privbench.models.pretrained_lm import default_model_folder, load_model, load_tokenizer
from privbench.run.observations import TrainedModel
from privbench.run.task_run import TaskRun
from privbench.scoring import scorers_for
from privbench.spec.schema import CellSpec
from privbench.spec.suite import Cell
from privbench.trainers.client_data import from_examples

# Public texts the round monitor evaluates each round (causal LMs).
PUBLIC_TEXTS = 64


def model_folder(spec: CellSpec) -> Path:
    """The user's model folder (model.path) or the cached, locally pretrained tiny GPT-2."""
    if spec.model.path:
        return Path(spec.model.path)
    return default_model_folder(spec.lm, spec.seed)


def lm_task(cell: Cell, run_dir: Path) -> TaskRun:
    """Load text, tokenizer and model; return the trainer inputs and the LM scorers."""
    spec = cell.spec
    lm = spec.lm
    if spec.task != "causal_lm":  # canaries are secrets in text a model generates: LMs only
        lm = lm.model_copy(update={"canaries": lm.canaries.model_copy(update={"count": 0})})
    data = load_text_data(spec.data, lm, spec.seed)
    audit, train_plan = None, spec.train
    folder = model_folder(spec)
    tokenizer = load_tokenizer(folder)
    if plants_secret_canaries(spec):  # the black-box audit's canaries (records or clients)
        data, audit, train_plan = plant_secret_canaries(spec, data, tokenizer)
    torch.manual_seed(spec.seed)
    model = load_model(folder, spec.task, len(data.label_names))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    ranks_secrets = spec.task == "causal_lm" and (
        (audit is not None and audit.design == "digits")
        or (lm.canaries.count and spec.attacks.canary_exposure.enabled))
    # checked before training: exposure can rank the secret space with this tokenizer
    if ranks_secrets and (problem := exposure_problem(tokenizer, lm.canaries.digits)):
        raise PrivbenchError(problem)
    adapter = HFAdapter(prepare_for_finetuning(model, spec.lm, spec.task), spec.task)
    train = examples(tokenizer, data.train_texts, data.train_labels, data.train_clients,
                     lm.max_length)
    test = examples(tokenizer, data.test_texts, data.test_labels, [-1] * len(data.test_texts),
                    lm.max_length)
    public = None
    if spec.task == "causal_lm":
        texts = public_corpus(PUBLIC_TEXTS, spec.seed + 1)
        public = examples(tokenizer, texts, [0] * len(texts), [-1] * len(texts),
                          lm.max_length).batch()

    shards = [ClientShard(c, np.flatnonzero(train.clients.numpy() == c))
              for c in range(data.n_clients)]
    trained_on, n_clients, hooks, canaries = train, data.n_clients, {}, None
    if spec.attacks.inversion.enabled:  # the server keeps these rounds' client updates
        hooks["record_rounds"] = set(spec.attacks.inversion.rounds)
    if spec.audit.enabled and spec.audit.canary == "random-unit":  # white-box canary clients
        dim = sum(p.numel() for p in adapter.init_params().values())
        canaries, train_plan, hook = plant_canary_clients(spec, data.n_clients, dim)
        trained_on = _with_canary_clients(train, canaries)
        n_clients += int(canaries.bits.sum())
        hooks["client_update_hook"] = hook
    elif plants_dirac(spec):  # Dirac gradient canaries: records of random clients
        canaries, hooks["gradient_canaries"] = plant_adapter_dirac_canaries(
            spec, adapter, public, train.batch(), data.n_clients)

    inputs = TrainerInputs(adapter, trained_on, n_clients, train_plan, hooks, lm.optimizer,
                           lm.server_optimizer, spec.model.engine, lm.microbatch)

    def context(trained: TrainedModel) -> LMContext:
        return LMContext(cell=cell, data=data, tokenizer=tokenizer, train=train, test=test,
                         trained=trained, audit=audit, shards=shards, canaries=canaries,
                         inputs=inputs, run_dir=run_dir)

    return TaskRun(adapter, from_examples(trained_on.batch(), trained_on.clients, n_clients),
                   public, train_plan, context, scorers_for("language"), data.fingerprint(),
                   hooks, optimizer=lm.optimizer, server_optimizer=lm.server_optimizer,
                   microbatch=lm.microbatch)


def _with_canary_clients(train: Examples, canaries: CanarySet) -> Examples:
    """The training examples plus one ordinary record (the first) for each included canary
    client, whose trained update the hook replaces."""
    ids = torch.as_tensor(canaries.client_ids[canaries.bits], dtype=torch.long)
    first = train.subset(torch.zeros(len(ids), dtype=torch.long))
    return Examples(torch.cat([train.ids, first.ids]), torch.cat([train.weights, first.weights]),
                    torch.cat([train.labels, first.labels]), torch.cat([train.clients, ids]))
