"""Options that several commands share: the run key for an encrypted run, the signing key, and
showing private text."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_key_option(parser: argparse.ArgumentParser) -> None:
    """Add --key-file (an encrypted run's key; default $PRIVBENCH_KEY) to `parser`."""
    parser.add_argument("--key-file", type=Path, default=None,
                        help="the run key of an encrypted run (default: $PRIVBENCH_KEY)")


def add_signing_option(parser: argparse.ArgumentParser) -> None:
    """Add --signing-key (an Ed25519 private key; default $PRIVBENCH_SIGNING_KEY) to `parser`."""
    parser.add_argument("--signing-key", type=Path, default=None,
                        help="an Ed25519 private key (PREFIX.key from `privbench keygen`) to "
                             "sign with (default: $PRIVBENCH_SIGNING_KEY)")


def add_private_text_option(parser: argparse.ArgumentParser) -> None:
    """Add --show-private-text (raw training text in the report; hidden by default) to `parser`."""
    parser.add_argument("--show-private-text", action="store_true",
                        help="show raw private text in the report (training sequences beside "
                             "their recoveries); hidden by default")
