"""The language-model task: a Hugging Face adapter and tokenised client text for the one trainer.

The model comes from the user's folder (`model.path`) or the cached, locally pretrained tiny
GPT-2; the client data are the tokenised training messages grouped by client; the round monitor
watches the next-token accuracy on generated public text (the pretraining corpus's distribution,
never a client's message). The LM scorers read an `LMContext`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from privbench.audit.lm_canaries import plant_secret_canaries, plants_secret_canaries
from privbench.errors import PrivbenchError
from privbench.lm.corpus import public_corpus
from privbench.lm.exposure import exposure_problem
from privbench.lm.pretrained import default_model_folder, load_model, load_tokenizer
from privbench.lm.scorers import LMContext
from privbench.lm.textdata import load_text_data
from privbench.lm.tokens import examples
from privbench.models.hf import HFAdapter, prepare_for_finetuning
from privbench.scoring import scorers_for
from privbench.spec import CellSpec
from privbench.suite import Cell
from privbench.tasks import TaskRun
from privbench.trained import TrainedModel
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
    if plants_secret_canaries(spec):  # the black-box audit's canaries (records or clients)
        data, audit, train_plan = plant_secret_canaries(spec, data)
    folder = model_folder(spec)
    tokenizer = load_tokenizer(folder)
    torch.manual_seed(spec.seed)
    model = load_model(folder, spec.task, len(data.label_names))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    ranks_secrets = spec.task == "causal_lm" and (audit is not None or (
        lm.canaries.count and spec.attacks.canary_exposure.enabled))
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

    def context(trained: TrainedModel) -> LMContext:
        return LMContext(cell=cell, data=data, tokenizer=tokenizer, train=train, test=test,
                         trained=trained, audit=audit)

    return TaskRun(adapter, from_examples(train.batch(), train.clients, data.n_clients), public,
                   train_plan, context, scorers_for("language"), data.fingerprint(),
                   optimizer=lm.optimizer, server_optimizer=lm.server_optimizer,
                   microbatch=lm.microbatch)
