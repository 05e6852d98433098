"""The tiny LM of the LM tests and the small LM suite that fine-tunes a user's saved model folder
(the `saved_model` fixture of tests/conftest.py): shared by the LM tests of several folders (run/,
audit/, trainers/, models/)."""

from __future__ import annotations

from privbench.spec.lm_schema import LMSpec

TINY_LM = LMSpec(layers=1, width=16, heads=2, vocab_size=600, pretrain_docs=1000,
                 pretrain_steps=5, pretrain_batch=8, max_length=32, messages_per_client=4)

SUITE = """
name = "lm-path"
seed = 1
task = "causal_lm"
[data]
name = "support_messages"
clients = 6
[model]
path = "{path}"
[lm]
max_length = 32
messages_per_client = 4
microbatch = 8
[lm.canaries]
count = 4
digits = 2
repetitions = [2]
[train]
rounds = 3
cohort = 3
batch_size = 4
lr = 0.05
[privacy]
clip = 1.0
[sweep]
"privacy.unit" = ["client", "example"]
"privacy.epsilon" = [2.0, inf]
"""
