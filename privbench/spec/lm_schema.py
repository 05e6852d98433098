"""The [lm] table of a spec: the language model, its fine-tuning and the canaries it plants."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from privbench.spec.base import StrictModel


class CanarySpec(StrictModel):
    """Canaries planted in the private text: random digit secrets in templates."""

    count: int = Field(12, ge=0)
    digits: int = Field(4, ge=1, le=5, description="secret length; the space has 10^digits")
    repetitions: list[int] = Field(default_factory=lambda: [1, 4, 16])
    inclusion: float = Field(0.5, gt=0, le=1, description="probability a canary is planted")

    @field_validator("repetitions")
    @classmethod
    def _positive_repetitions(cls, v: list[int]) -> list[int]:
        if not v or any(r < 1 for r in v):
            raise ValueError("list at least one repetition count, each at least 1")
        return v


class LMSpec(StrictModel):
    """Language-model options: the default tiny GPT-2, its pretraining, fine-tuning, canaries."""

    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_targets: list[str] = Field(default_factory=list,
                                    description="module names; empty = peft's default")
    optimizer: Literal["adam", "sgd"] = "adam"
    server_optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="DP-FedAvg server step on the noisy mean update (adam = DP-FedAdam)")
    max_length: int = Field(48, ge=4)
    microbatch: int = Field(64, ge=1, description="examples per vectorised gradient call")
    messages_per_client: int = Field(20, ge=2)
    layers: int = Field(2, ge=1)
    width: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    vocab_size: int = Field(1024, ge=300)
    pretrain_docs: int = Field(4000, ge=10)
    pretrain_steps: int = Field(300, ge=0)
    pretrain_batch: int = Field(32, ge=1)
    pretrain_lr: float = Field(3e-3, gt=0)
    canaries: CanarySpec = Field(default_factory=CanarySpec)


