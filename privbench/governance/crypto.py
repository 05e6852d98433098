"""Keys, authenticated encryption and signatures (the `cryptography` package).

Two kinds of key:

- the **run key** (AEAD): 32 random bytes, written as base64 text (`privbench keygen --encryption
  FILE`), read from `--key-file FILE` or `$PRIVBENCH_KEY`. A sealed file is `MAGIC`, the key's
  8-byte id, a random 12-byte nonce, then AES-256-GCM ciphertext and tag; the associated data is
  the file's path inside its run folder, so a file moved to another path, or swapped with another
  cell's, fails authentication like an edited one.
- the **signing key** (Ed25519): a PKCS#8 PEM file (`privbench keygen PREFIX` writes
  `PREFIX.key` and `PREFIX.pub`), read from `--signing-key FILE` or `$PRIVBENCH_SIGNING_KEY` (the
  PEM text itself, or the base64 of the 32-byte private seed). Whoever holds only the public key
  can check what it signed.

The run key of this process is set once by the CLI (`use_key`) and handed to worker processes by
the runner, so every reader and writer of a run folder finds it without threading it through
every call; `$PRIVBENCH_KEY` is the fallback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privbench.errors import PrivbenchError

KEY_ENV = "PRIVBENCH_KEY"
SIGNING_KEY_ENV = "PRIVBENCH_SIGNING_KEY"
AEAD_NAME = "AES-256-GCM"
MAGIC = b"PBSEAL1\n"
_ID_BYTES = 8
_NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + _ID_BYTES + _NONCE_BYTES
_AD_PREFIX = b"privbench-sealed/1\0"


class SealError(PrivbenchError):
    """A sealed file cannot be opened: no key, another key, or it fails authentication."""


@dataclass(frozen=True)
class RunKey:
    """A 256-bit AEAD key; `key_id` names it without revealing it (a hash, 8 bytes)."""

    secret: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"privbench-key-id/1\0" + self.secret).digest()[:_ID_BYTES].hex()


def new_run_key_text() -> str:
    """A fresh random run key as the base64 text a key file holds."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def parse_run_key(text: str, where: str) -> RunKey:
    """A run key from its base64 text.

    Args:
        text: the base64 of 32 bytes (surrounding whitespace ignored).
        where: how the source is named in the error (e.g. `--key-file k.txt`).

    Raises:
        PrivbenchError: the text is not the base64 of 32 bytes.
    """
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != 32:
        raise PrivbenchError(f"{where}: not a privbench run key (the base64 of 32 bytes); "
                             "write one with `privbench keygen --encryption FILE`")
    return RunKey(secret)


def load_run_key(key_file: Path | None = None) -> RunKey | None:
    """The run key from `key_file`, else from $PRIVBENCH_KEY, else None.

    Raises:
        PrivbenchError: the file cannot be read, or it or the variable holds no valid key.
    """
    return _key_from(key_file, "--key-file", "the file `privbench keygen --encryption` wrote",
                     KEY_ENV, parse_run_key)


_ACTIVE: list[RunKey | None] = [None]


def set_run_key(key: RunKey | None) -> None:
    """Make `key` this process's run key (the runner calls it in each worker process)."""
    _ACTIVE[0] = key


def active_run_key() -> RunKey | None:
    """This process's run key: the one set by `use_key`/`set_run_key`, else $PRIVBENCH_KEY."""
    return _ACTIVE[0] if _ACTIVE[0] is not None else load_run_key(None)


@contextmanager
def use_key(key: RunKey | None) -> Iterator[None]:
    """Use `key` as this process's run key inside the block (None: keep the current one)."""
    before = _ACTIVE[0]
    if key is not None:
        _ACTIVE[0] = key
    try:
        yield
    finally:
        _ACTIVE[0] = before


def _ad(name: str) -> bytes:
    return _AD_PREFIX + name.encode("utf-8")


def is_sealed(data: bytes) -> bool:
    """Whether `data` begins with the sealed-file MAGIC (then it needs the run key)."""
    return data.startswith(MAGIC)


def seal(key: RunKey, data: bytes, name: str) -> bytes:
    """`data` encrypted and authenticated for the path `name` (random nonce per call)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return (MAGIC + bytes.fromhex(key.key_id) + nonce
            + AESGCM(key.secret).encrypt(nonce, data, _ad(name)))


def sealed_key_id(blob: bytes) -> str:
    """The id of the run key that sealed `blob`, read from its header."""
    return blob[len(MAGIC):len(MAGIC) + _ID_BYTES].hex()


def unseal(key: RunKey | None, blob: bytes, name: str, where: str) -> bytes:
    """The plaintext of a sealed file, authenticated for the path `name`.

    Args:
        key: the run key (None: refuse, asking for it).
        blob: the file's bytes.
        name: the file's path inside its run folder (the associated data).
        where: how the file is named in errors.

    Raises:
        SealError: no key, another key, or the file fails authentication (one line).
    """
    if key is None:
        raise SealError(f"{where} is encrypted: give the run's key with --key-file FILE or "
                        f"${KEY_ENV}")
    if len(blob) < HEADER_BYTES + 16:
        raise SealError(f"{where} fails authentication: it is cut short")
    if sealed_key_id(blob) != key.key_id:
        raise SealError(f"{where} was sealed with key {sealed_key_id(blob)}, not the given key "
                        f"{key.key_id}: give the run's key (or its header was edited)")
    nonce = blob[len(MAGIC) + _ID_BYTES:HEADER_BYTES]
    try:
        return AESGCM(key.secret).decrypt(nonce, blob[HEADER_BYTES:], _ad(name))
    except InvalidTag:
        raise SealError(f"{where} fails authentication: it was edited, corrupted, or moved "
                        "from another path") from None


# --- signatures -------------------------------------------------------------------------------

def public_key_text(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as base64 (how trail entries and signatures.json name it)."""
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)).decode("ascii")


def fingerprint(public_text: str) -> str:
    """A short name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_text.encode("ascii")).hexdigest()[:16]


def write_key_pair(prefix: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 pair: `PREFIX.key` (private, PKCS#8 PEM, mode 0600) and `PREFIX.pub`.

    Raises:
        PrivbenchError: either file exists already (keys are never overwritten).
    """
    private, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private, public):
        if path.exists():
            raise PrivbenchError(f"{path}: exists already; keys are never overwritten, choose "
                                 "another prefix")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_private(private, pem)
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def write_run_key(path: Path) -> Path:
    """Write a new run key file (mode 0600); refuse to overwrite one."""
    path = Path(path)
    if path.exists():
        raise PrivbenchError(f"{path}: exists already; keys are never overwritten, choose "
                             "another file")
    _write_private(path, (new_run_key_text() + "\n").encode("ascii"))
    return path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _parse_private(text: str, where: str) -> Ed25519PrivateKey:
    try:
        if text.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(
                base64.b64decode(text.strip(), validate=True))
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise PrivbenchError(f"{where}: not an Ed25519 private key; write one with "
                             "`privbench keygen PREFIX` and give PREFIX.key")
    return key


def load_signing_key(path: Path | None = None) -> Ed25519PrivateKey | None:
    """The signing key from `path`, else from $PRIVBENCH_SIGNING_KEY, else None.

    Raises:
        PrivbenchError: the file cannot be read or does not hold an Ed25519 private key.
    """
    return _key_from(path, "--signing-key", "the PREFIX.key file `privbench keygen` wrote",
                     SIGNING_KEY_ENV, _parse_private)


def load_public_key(path: Path) -> str:
    """A public key file (PEM, as `privbench keygen` writes PREFIX.pub) as base64 raw text.

    Raises:
        PrivbenchError: the file cannot be read or holds no Ed25519 public key.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PrivbenchError(f"--public-key {path}: cannot read it ({e.strerror or e}); give "
                             "the PREFIX.pub file `privbench keygen` wrote") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise PrivbenchError(f"--public-key {path}: not an Ed25519 public key (PEM); give the "
                             "PREFIX.pub file `privbench keygen` wrote")
    return public_key_text(key)


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """The Ed25519 signature of `message`, as base64."""
    return base64.b64encode(key.sign(message)).decode("ascii")


def signature_ok(public_text: str, message: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is the signature of `message` by `public_text`'s key."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_text, validate=True))
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return False
    return True


def _key_from(path: str | Path | None, flag: str, hint: str, env: str,
              parse: Callable[[str, str], Any]) -> Any:
    """A key parsed from the file `path` (given by `flag`), else from the variable `env`, else
    None; `parse(text, where)` names the file or variable in its error."""
    if path is not None:
        return parse(_read_key_file(path, flag, hint), f"{flag} {path}")
    value = os.environ.get(env)
    return parse(value, f"${env}") if value else None


def _read_key_file(path: str | Path, flag: str, hint: str) -> str:
    """The text of a key file named by `flag`, or one line saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise PrivbenchError(f"{flag} {path}: cannot read it "
                             f"({getattr(e, 'strerror', None) or e}); give {hint}") from None
