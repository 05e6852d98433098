"""privbench: train with differential privacy, attack, and score leakage against the claim."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("privbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
