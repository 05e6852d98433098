"""`privbench keygen`: a run key for encryption at rest, or an Ed25519 signing key pair."""

from __future__ import annotations

import argparse


def keygen_command(args: argparse.Namespace) -> int:
    """Run `privbench keygen`: write a run key (--encryption) or an Ed25519 signing key pair to
    `args.path` and print where each went; returns the exit code, 0.
    """
    from privbench.governance.crypto import write_key_pair, write_run_key

    if args.encryption:
        print(f"{write_run_key(args.path)}: run key; keep it secret (pass it with --key-file "
              "or $PRIVBENCH_KEY)")
        return 0
    private, public = write_key_pair(args.path)
    print(f"{private}: signing key, keep it secret (--signing-key); {public}: public key, "
          "share it (verify --public-key)")
    return 0
