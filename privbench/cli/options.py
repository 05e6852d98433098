"""Options that several commands share: the run key for an encrypted run, the signing key, and
showing private text."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-file", type=Path, default=None,
                        help="the run key of an encrypted run (default: $PRIVBENCH_KEY)")


def add_signing_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--signing-key", type=Path, default=None,
                        help="an Ed25519 private key (PREFIX.key from `privbench keygen`) to "
                             "sign with (default: $PRIVBENCH_SIGNING_KEY)")


def add_private_text_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--show-private-text", action="store_true",
                        help="show raw private text in the report (training sequences beside "
                             "their recoveries); hidden by default")
