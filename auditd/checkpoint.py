"""Signed checkpoints (tree heads) and the Ed25519 key that signs them.

The signed message is a C2SP tlog-checkpoint note text (https://c2sp.org/tlog-checkpoint) with
one extension line for the time; exactly these UTF-8 bytes, each line ending in one 0x0A:

    <origin>\\n
    <tree size, ASCII decimal, no leading zeros>\\n
    <root hash, standard base64 (RFC 4648 section 4, with padding) of the 32 bytes>\\n
    Timestamp: <Unix time in seconds, UTC, ASCII decimal>\\n

The signature is Ed25519 (RFC 8032, pure, no pre-hash) over those bytes. The same signature also
makes a C2SP signed note (https://c2sp.org/signed-note): the text, a blank line, and

    \\u2014 <origin> base64(key ID (4 bytes) || signature (64 bytes))\\n
    key ID = SHA-256(<origin> || 0x0A || 0x01 || 32-byte public key)[:4]

so tools that check signed notes (e.g. golang.org/x/mod/sumdb/note) check auditd's checkpoints
with the verifier key `vkey(origin, public_key)`.
"""
import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .model.errors import AuditdError
from .merkle import HASH_SIZE, MAX_SIZE, VerificationError

ED25519 = b"\x01"        # the signed-note signature type of Ed25519
EM_DASH = "\u2014"


class KeyFileError(AuditdError):
    """The signing key file cannot be used; the message says what to do."""


# ---------------------------------------------------------------------------- the key

def load_or_create_key(path) -> Ed25519PrivateKey:
    """The Ed25519 key in `path` (PKCS#8 PEM), created with mode 0600 when there is none.

    Creation is atomic: the key is written and synced under a temporary name, then linked into
    place, which fails if another process made one meanwhile (that key is then used). An
    existing key that group or others may read or write is refused."""
    path = Path(path)
    try:
        return _load_key(path)
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        raise KeyFileError(f"cannot create the signing key {path}: no directory "
                           f"{path.parent}") from None
    try:
        os.fchmod(fd, 0o600)                   # whatever the umask
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _load_key(path)
    finally:
        tmp.unlink()
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return key


def _load_key(path: Path) -> Ed25519PrivateKey:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyFileError(f"the signing key {path} has mode {mode:04o}: others could read or "
                           f"replace it. Make it readable by its owner only: chmod 600 {path}")
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_bytes(key) -> bytes:
    """The raw 32-byte public key of a private or public Ed25519 key."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key) -> str:
    return base64.b64encode(public_key_bytes(key)).decode()


def key_id(origin: str, public_key: bytes) -> bytes:
    """The signed-note key ID: SHA-256(origin || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(origin.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def vkey(origin: str, public_key: bytes) -> str:
    """The signed-note verifier key: <origin>+<hex key ID>+<base64(0x01 || public key)>."""
    return (f"{origin}+{key_id(origin, public_key).hex()}+"
            f"{base64.b64encode(ED25519 + public_key).decode()}")


# ---------------------------------------------------------------------------- checkpoints

def _check_origin(origin) -> str:
    if (not isinstance(origin, str) or not origin or any(c.isspace() for c in origin)
            or "+" in origin or any(ord(c) < 0x20 or ord(c) == 0x7f for c in origin)):
        raise ValueError("an origin is a non-empty name without spaces, '+' or control "
                         f"characters, such as example.com/auditd (got {origin!r})")
    return origin


def checkpoint_text(origin: str, size: int, root: bytes, timestamp: int) -> bytes:
    """The exact bytes a checkpoint's signature covers (see the module docstring)."""
    _check_origin(origin)
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise ValueError(f"a tree size is an integer in 0..2**64-1 (got {size!r})")
    if type(timestamp) is not int or timestamp < 0:
        raise ValueError(f"a timestamp is a non-negative integer (got {timestamp!r})")
    if not isinstance(root, (bytes, bytearray)) or len(root) != HASH_SIZE:
        raise ValueError(f"a root hash is {HASH_SIZE} bytes")
    return (f"{origin}\n{size}\n{base64.b64encode(bytes(root)).decode()}\n"
            f"Timestamp: {timestamp}\n").encode()


def _note(text: bytes, origin: str, public_key: bytes, signature: bytes) -> str:
    sig = base64.b64encode(key_id(origin, public_key) + signature).decode()
    return f"{text.decode()}\n{EM_DASH} {origin} {sig}\n"


def sign_checkpoint(key: Ed25519PrivateKey, size: int, root: bytes, timestamp: int,
                    origin: str) -> dict:
    """A signed tree head, as the API returns it."""
    text = checkpoint_text(origin, size, root, timestamp)
    signature = key.sign(text)
    public = public_key_bytes(key)
    return {"origin": origin, "tree_size": size, "root_hash": bytes(root).hex(),
            "timestamp": timestamp, "signature": base64.b64encode(signature).decode(),
            "public_key": base64.b64encode(public).decode(),
            "note": _note(text, origin, public, signature)}


def _b64(value, what: str, length: int) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise VerificationError(f"the checkpoint's {what} is not base64") from None
    if len(raw) != length:
        raise VerificationError(f"the checkpoint's {what} is {len(raw)} bytes, not {length}")
    return raw


def _public_key(value) -> bytes:
    if isinstance(value, (Ed25519PublicKey, Ed25519PrivateKey)):
        return public_key_bytes(value)
    if isinstance(value, (bytes, bytearray)) and len(value) == 32:
        return bytes(value)
    return _b64(value, "public key", 32)


def check_checkpoint(cp: dict, public_key=None) -> None:
    """Raise VerificationError unless `cp` is signed by `public_key` (raw 32 bytes, base64 or
    a key object). Without `public_key` the key the checkpoint names is used: that proves it
    was not altered since signing, not who signed it."""
    if not isinstance(cp, dict):
        raise VerificationError("a checkpoint is a JSON object")
    missing = [k for k in ("origin", "tree_size", "root_hash", "timestamp", "signature")
               if k not in cp]
    if missing:
        raise VerificationError(f"the checkpoint has no {', '.join(missing)}")
    named = _public_key(cp["public_key"]) if cp.get("public_key") is not None else None
    if public_key is None and named is None:
        raise VerificationError("the checkpoint names no public key: give the one to trust")
    trusted = _public_key(public_key) if public_key is not None else named
    if named is not None and named != trusted:
        raise VerificationError("the checkpoint was signed by another key than the one given")
    try:
        root = bytes.fromhex(cp["root_hash"])
        text = checkpoint_text(cp["origin"], cp["tree_size"], root, cp["timestamp"])
    except (ValueError, TypeError) as e:
        raise VerificationError(f"the checkpoint is malformed: {e}") from None
    signature = _b64(cp["signature"], "signature", 64)
    try:
        Ed25519PublicKey.from_public_bytes(trusted).verify(signature, text)
    except InvalidSignature:
        raise VerificationError("the checkpoint's signature does not match its contents "
                                "(origin, tree size, root hash and timestamp)") from None
    if cp.get("note") is not None and cp["note"] != _note(text, cp["origin"], trusted, signature):
        raise VerificationError("the checkpoint's note differs from its fields")


def verify_checkpoint(cp: dict, public_key=None) -> bool:
    try:
        check_checkpoint(cp, public_key)
    except VerificationError:
        return False
    return True


def verify_note(note: str, verifier_key: str) -> str:
    """Check a C2SP signed note against a verifier key (<name>+<hex id>+<base64(0x01||key)>);
    returns the note text. Signatures by other keys are ignored, as the spec requires."""
    name, _, rest = verifier_key.partition("+")
    id_hex, _, material = rest.partition("+")
    try:
        raw = base64.b64decode(material, validate=True)
    except binascii.Error:
        raise VerificationError("the verifier key is not <name>+<hex id>+<base64 key>") from None
    if len(raw) != 33 or raw[:1] != ED25519 or key_id(name, raw[1:]).hex() != id_hex:
        raise VerificationError("the verifier key is not a valid Ed25519 signed-note key")
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise VerificationError("the note has no blank line before its signatures")
    text += "\n"
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    for line in signatures.split("\n"):
        dash, _, rest = line.partition(" ")
        signer, _, sig = rest.partition(" ")
        if dash != EM_DASH or signer != name:
            continue
        try:
            blob = base64.b64decode(sig, validate=True)
        except binascii.Error:
            continue
        if blob[:4].hex() != id_hex:
            continue
        try:
            public.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise VerificationError(f"the signature of {name} does not match the note") from None
        return text
    raise VerificationError(f"the note carries no signature by {name}")
