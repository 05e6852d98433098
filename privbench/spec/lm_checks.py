"""Cross-field checks of a language-model cell spec (task causal_lm or sequence_classification)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privbench.spec.schema import CellSpec


def lm_problems(spec: CellSpec) -> list[str]:
    """One line per problem, naming the field and the fix."""
    problems = []
    from privbench.data.registry import names_of

    if spec.data.name not in names_of("text"):
        problems.append(f"data.name = {spec.data.name!r}: task {spec.task} needs a text data set; "
                        "use \"support_messages\" (generated) or \"jsonl\" with data.path")
    if spec.data.name == "jsonl" and not spec.data.path:
        problems.append("data.path: missing; data.name = \"jsonl\" needs a folder of .jsonl files "
                        "(one per client)")
    if spec.data.path and not Path(spec.data.path).is_dir():
        problems.append(f"data.path = {spec.data.path!r}: not a folder; give a folder of .jsonl "
                        "files, one per client")
    elif spec.data.name == "jsonl" and spec.data.path:
        from privbench.data.text_clients import jsonl_folder_problem

        if (problem := jsonl_folder_problem(Path(spec.data.path), spec.data.clients)):
            problems.append(problem)
    if spec.model.path is None and spec.model.name != "tiny_gpt2":
        problems.append(f"model.name = {spec.model.name!r}: task {spec.task} needs "
                        "model.name = \"tiny_gpt2\" or model.path = a local model folder")
    if spec.model.path and not (Path(spec.model.path) / "config.json").is_file():
        problems.append(f"model.path = {spec.model.path!r}: no config.json there; give a folder "
                        "written by save_pretrained")
    elif spec.model.path and not _has_tokenizer(Path(spec.model.path)):
        problems.append(f"model.path = {spec.model.path!r}: no tokenizer files there; "
                        "save the model's tokenizer with tokenizer.save_pretrained(path)")
    if spec.lm.width % spec.lm.heads:
        problems.append(f"lm.heads = {spec.lm.heads}: must divide lm.width ({spec.lm.width})")
    canaries = spec.lm.canaries
    if canaries.count * 2 > 10**canaries.digits:
        problems.append(f"lm.canaries.count = {canaries.count}: at most half of the "
                        f"10^{canaries.digits} secrets; raise lm.canaries.digits or lower it")
    a = spec.audit
    if a.enabled and a.canary == "random-unit" and a.design != "manual":
        problems.append(f"audit.design = {a.design!r}: the auto design searches over a "
                        "classifier's data; set audit.design = 'manual' for a language model")
    elif a.enabled and a.canary not in ("secret", "random-unit", "dirac"):
        problems.append(f"audit.canary = {a.canary!r}: language models are audited with secret "
                        "canaries on the released model (audit.canary = 'secret', task "
                        "causal_lm), with canary clients on the weights (audit.canary = "
                        "'random-unit', client level) or Dirac gradient canaries "
                        "(audit.canary = 'dirac', example level)")
    elif a.enabled and a.canary in ("random-unit", "dirac"):  # the white-box designs' checks
        from privbench.spec.audit_checks import audit_problems

        problems += audit_problems(spec)
    elif a.enabled and a.canary == "secret" and (
            a.surface != "final_model" or a.mode != "one-run" or spec.task != "causal_lm"):
        problems.append(f"audit.surface = {a.surface!r}: secret canaries are scored on the "
                        "released model; set audit.surface = 'final_model', audit.mode = "
                        "'one-run' (task causal_lm)")
    if (a.enabled and a.canary == "secret" and a.secret == "digits"
            and a.n_canaries * 2 > 10**canaries.digits):
        problems.append(f"audit.n_canaries = {a.n_canaries}: at most half of the "
                        f"10^{canaries.digits} secrets; raise lm.canaries.digits or lower it")
    problems += _inversion_problems(spec)
    if spec.attacks.lira.enabled or spec.attacks.rmia.enabled:
        from privbench.spec.lm_shadow_checks import lm_shadow_problems

        problems += lm_shadow_problems(spec)
    if spec.privacy.unit == "example" and spec.train.batch_size > _max_examples(spec):
        problems.append(f"train.batch_size = {spec.train.batch_size}: the expected DP-SGD batch "
                        "must be below the number of training examples; lower it")
    return problems


def _inversion_problems(spec: CellSpec) -> list[str]:
    """The LM update inversion (bag of words, DAGER) runs on causal LMs' recorded rounds."""
    inv = spec.attacks.inversion
    if not inv.enabled:
        return []
    if spec.task != "causal_lm":
        return [f"attacks.inversion.enabled = true: the text inversion attacks invert next-token "
                f"gradients (task = {spec.task!r}); use task = 'causal_lm' or turn it off"]
    problems = []
    if inv.text:
        problems.append("attacks.inversion.text = true: a language model's own client updates "
                        "are attacked; the separate tiny GPT-2 is for tabular cells, set it false")
    if max(inv.rounds) > spec.train.rounds:
        problems.append(f"attacks.inversion.rounds = {inv.rounds}: every round must be at most "
                        f"train.rounds ({spec.train.rounds}); drop the later rounds")
    return problems


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")


def _has_tokenizer(folder: Path) -> bool:
    """Whether a model folder holds any tokenizer file (`load_tokenizer` needs one; checked up
    front so that a folder saved without its tokenizer fails once, before any cell starts)."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _max_examples(spec: CellSpec) -> int:
    if spec.data.name != "support_messages":
        return 10**9  # a user's folder is counted when it loads
    return spec.data.clients * spec.lm.messages_per_client
