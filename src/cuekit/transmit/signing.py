"""Signed manifests (Ed25519): key files, the detached `manifest.sig`, and its verification.

Formats (fixed; the browser page reads the same files):
- `NAME.key`: the Ed25519 private key, PKCS#8 PEM, unencrypted, file mode 0600.
- `NAME.pub`: the raw 32-byte public key as 64 lowercase hex characters and a newline.
- `manifest.sig`, beside `manifest.json`: {"alg": "Ed25519", "public_key": "<64 hex>",
  "signature": "<128 hex>"}; the signed message is the exact bytes of `manifest.json` on disk.

A trusted key (`--trust`) is the 64-hex string itself or the path of a `.pub` file. Verification
uses only the trusted key: the `public_key` field of a signature says which key claims to have
signed (so that "signed by another key" can be told apart from "altered after signing"), it is
never trusted. `cryptography` is imported only when a key is made, read or used.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Union

from cuekit.errors import DataError, UsageError

__all__ = ["ALG", "SIGNATURE_NAME", "SignatureError", "TrustedKey", "generate_keypair", "load_private_key",
           "parse_public_key", "public_key_hex", "read_signature", "sign_bytes", "sign_package",
           "signature_json", "verify_signature"]

ALG = "Ed25519"
SIGNATURE_NAME = "manifest.sig"
MAX_SIGNATURE_BYTES = 64 * 1024
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX128 = re.compile(r"[0-9a-fA-F]{128}")

# What `trust=` accepts: the 64-hex string, the path of a .pub file, or the 32 raw bytes.
TrustedKey = Union[str, Path, bytes]


class SignatureError(DataError):
    """A manifest that is unsigned, signed by another key, or altered after signing, while a key is trusted
    (exit code 2); nothing of the package was loaded."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise UsageError("signing and verifying manifests needs the `cryptography` package: "
                         "pip install cryptography (or cuekit[all])") from None
    return ed25519, serialization, InvalidSignature


def short_key(hex_key: str) -> str:
    """The first 16 hex characters of a public key, for messages."""
    return hex_key[:16] + "..."


def parse_public_key(spec: TrustedKey) -> bytes:
    """The 32 raw bytes of a trusted Ed25519 public key given as 64 hex characters, a `.pub` file or raw bytes
    (UsageError otherwise)."""
    if isinstance(spec, (bytes, bytearray)):
        if len(spec) != 32:
            raise UsageError(f"an Ed25519 public key is 32 bytes, got {len(spec)}")
        return bytes(spec)
    text = str(spec).strip()
    if _HEX64.fullmatch(text):
        return bytes.fromhex(text)
    path = Path(text).expanduser()
    try:
        content = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise UsageError(f"trusted key {text!r} is neither 64 hex characters (an Ed25519 public key) nor an "
                         "existing .pub file (make one with `cuekit transmit keygen --out NAME`)") from None
    except OSError as e:
        raise UsageError(f"cannot read the trusted key file {path}: {e.strerror or e}") from None
    if not _HEX64.fullmatch(content):
        hint = " (that is a private key: give its .pub file)" if "PRIVATE KEY" in content else ""
        raise UsageError(f"{path} does not hold an Ed25519 public key as 64 hex characters{hint}")
    return bytes.fromhex(content)


def public_key_hex(raw: bytes) -> str:
    """64 lowercase hex characters."""
    return bytes(raw).hex()


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600 from the moment the file exists."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def key_paths(out: str | Path) -> tuple[Path, Path]:
    """(NAME.key, NAME.pub) for `keygen --out NAME` (a trailing .key or .pub on NAME is dropped)."""
    out = Path(out).expanduser()
    if out.suffix in (".key", ".pub"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".key"), out.with_name(out.name + ".pub")


def generate_keypair(out: str | Path, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (64 hex + newline); return both paths and the
    public key's hex. Existing files are refused unless `overwrite`."""
    from cuekit.io import atomic_write_text

    ed25519, serialization, _ = _crypto()
    key_path, pub_path = key_paths(out)
    if not overwrite:
        for p in (key_path, pub_path):
            if p.exists():
                raise UsageError(f"{p} exists; a key is not replaced unless you ask (--force), since the packages "
                                 "it signed would no longer verify against a new key")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    raw_pub = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    _write_private(key_path, pem)
    atomic_write_text(pub_path, public_key_hex(raw_pub) + "\n")
    return key_path, pub_path, public_key_hex(raw_pub)


def load_private_key(path: str | Path) -> Any:
    """The Ed25519 private key in a PKCS#8 PEM file (UsageError for anything else)."""
    ed25519, serialization, _ = _crypto()
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"signing key {path} not found (make one with `cuekit transmit keygen --out NAME`)") \
            from None
    except OSError as e:
        raise UsageError(f"cannot read the signing key {path}: {e.strerror or e}") from None
    if _HEX64.fullmatch(data.strip().decode("ascii", "replace")):
        raise UsageError(f"{path} holds a public key; sign with the private .key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(f"{path} is an encrypted private key; cuekit reads unencrypted PKCS#8 PEM keys "
                         "(as `cuekit transmit keygen` writes them)") from None
    except ValueError:
        raise UsageError(f"{path} is not a PEM private key (expected an Ed25519 key in PKCS#8 PEM, as "
                         "`cuekit transmit keygen` writes)") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UsageError(f"{path} holds a {type(key).__name__.lstrip('_')}, not an Ed25519 key")
    return key


def signature_json(private_key: Any, message: bytes) -> dict:
    """The `manifest.sig` object for `message` (the exact bytes of manifest.json)."""
    _, serialization, _ = _crypto()
    raw_pub = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"alg": ALG, "public_key": public_key_hex(raw_pub), "signature": private_key.sign(message).hex()}


def sign_bytes(key: str | Path | Any, message: bytes) -> bytes:
    """The bytes of a `manifest.sig` for `message`; key: a private key object or the path of a .key file."""
    if isinstance(key, (str, Path)):
        key = load_private_key(key)
    return (json.dumps(signature_json(key, message)) + "\n").encode("utf-8")


def sign_package(package_dir: str | Path, key: str | Path | Any) -> dict:
    """Sign `package_dir/manifest.json` as it is on disk; write `manifest.sig` beside it; return its object."""
    from cuekit.io import atomic_write_bytes
    from cuekit.transmit.package import MANIFEST_NAME

    package_dir = Path(package_dir)
    try:
        message = (package_dir / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        raise DataError(f"no {MANIFEST_NAME} in {package_dir} to sign") from None
    data = sign_bytes(key, message)
    atomic_write_bytes(package_dir / SIGNATURE_NAME, data)
    return json.loads(data)


def read_signature(data: bytes | None, where: str) -> dict:
    """Parse a `manifest.sig` (SignatureError when missing or malformed)."""
    if data is None:
        raise SignatureError(f"{where} is not signed (no {SIGNATURE_NAME}) but a trusted key was given; "
                             "refused, nothing was loaded")
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        obj = None
    if not (isinstance(obj, dict) and isinstance(obj.get("public_key"), str) and isinstance(obj.get("signature"), str)
            and _HEX64.fullmatch(obj["public_key"]) and _HEX128.fullmatch(obj["signature"])):
        raise SignatureError(f"the {SIGNATURE_NAME} of {where} is malformed (expected JSON with alg, public_key: 64 "
                             "hex, signature: 128 hex); refused, nothing was loaded")
    if obj.get("alg") != ALG:
        raise SignatureError(f"the {SIGNATURE_NAME} of {where} uses {obj.get('alg')!r}, not {ALG}; refused, "
                             "nothing was loaded")
    return obj


def verify_signature(manifest_bytes: bytes, sig_bytes: bytes | None, trusted: TrustedKey, where: str) -> str:
    """Check that `manifest_bytes` were signed by the trusted key; return its hex. SignatureError (one line) when
    the package is unsigned, signed by another key, or altered after signing."""
    ed25519, _, InvalidSignature = _crypto()
    trusted_raw = parse_public_key(trusted)
    trusted_hex = public_key_hex(trusted_raw)
    sig = read_signature(sig_bytes, where)
    claimed = sig["public_key"].lower()
    if claimed != trusted_hex:
        raise SignatureError(f"{where} is signed by another key ({short_key(claimed)}), not the trusted key "
                             f"({short_key(trusted_hex)}); refused, nothing was loaded")
    try:
        public = ed25519.Ed25519PublicKey.from_public_bytes(trusted_raw)
    except ValueError:
        raise UsageError(f"the trusted key {trusted_hex} is not a valid Ed25519 public key") from None
    try:
        public.verify(bytes.fromhex(sig["signature"]), bytes(manifest_bytes))
    except InvalidSignature:
        raise SignatureError(f"the signature of {where} does not match its manifest.json: the manifest was altered "
                             "after signing (or the signature is corrupt); refused, nothing was loaded") from None
    return trusted_hex
