"""Models: the adapter contract (`adapter.py`) and the model zoo (`zoo.py`)."""

from __future__ import annotations

from privbench.models.zoo import MODELS, build_model, cnn, load_factory, mlp, model_problems

__all__ = ["MODELS", "build_model", "cnn", "load_factory", "mlp", "model_problems"]
