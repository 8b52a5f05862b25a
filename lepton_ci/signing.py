"""Asymmetric blessings: the gate signs with a private key, deploy and auditors verify with the public key.

Why asymmetric: with a shared secret every job that can check a blessing can also forge one. Here only
the gate job holds `LEPTON_CI_SIGNING_KEY` (an EC P-256 private key); the public key is not secret and
can be committed (`signing.public_key` in lepton.yml, `LEPTON_CI_PUBLIC_KEY`, or `--public-key`).

A blessing has two parts, one key:
- the model files are signed in the OpenSSF model-signing (OMS) format with the `model-signing`
  package, so anyone can check a version with `model_signing verify key DIR --signature SIG
  --public_key PUB` without lepton-ci;
- the gate record is signed over a canonical form of its signed fields (`blessing_payload`), which
  names the digest of the OMS bundle. The payload is built from named fields, never from the record
  class's `to_dict()`, so adding a field or bumping a schema version never invalidates a signature.

Everything here fails closed: a key that cannot be read, a signature that cannot be parsed, or a
library error while verifying is a refusal with a reason, never a pass.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton_ci.errors import TrustError, UserError
from lepton_ci.fsutil import canonical_json, sha256_bytes

if TYPE_CHECKING:
    from lepton_ci.records import GateRecord

KEY_ENV = "LEPTON_CI_SIGNING_KEY"
KEY_FILE_ENV = "LEPTON_CI_SIGNING_KEY_FILE"
PUBLIC_KEY_ENV = "LEPTON_CI_PUBLIC_KEY"
ALG = "ecdsa-p256-sha256"
PAYLOAD_TYPE = "lepton-ci/gate-blessing"
PAYLOAD_VERSION = 1  # bump, keeping the old form verifiable, when the signed fields change
OMS_FORMAT = "openssf-model-signing/v1.1"


@dataclass(frozen=True)
class PublicKey:
    """A verification key and where it came from (for messages)."""

    key: Any  # cryptography EllipticCurvePublicKey
    source: str

    @property
    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def key_id(self) -> str:
        return key_id_of_pem(self.pem)


@dataclass(frozen=True)
class PrivateKey:
    key: Any  # cryptography EllipticCurvePrivateKey
    source: str

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), f"the public half of {self.source}")

    @property
    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def key_id_of_pem(public_pem: bytes) -> str:
    """sha256 of the public key's PEM, as model-signing's bundle hint; 16 hex digits are enough to tell
    keys apart in a message and are never secret."""
    return hashlib.sha256(public_pem).hexdigest()[:16]


# --- keys ---------------------------------------------------------------------------------------------


def decode_private(text: str, source: str) -> PrivateKey:
    """A PEM private key, or the one-line base64 form `keys generate` prints for CI secrets that do not
    keep line breaks. Never echoes the value."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = text.strip()
    try:
        if data.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(data.encode(), password=None)
        else:
            key = serialization.load_der_private_key(base64.b64decode(data, validate=True), password=None)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise UserError(
            f"{source} is not an unencrypted PEM (or one-line base64 DER) private key; generate one with "
            "`lepton-ci keys generate` (keys from lepton-ci 0.1 were HMAC secrets and are not accepted)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise UserError(f"{source} must be an EC P-256/P-384/P-521 private key (the curves model-signing supports)")
    return PrivateKey(key, source)


def load_private_key() -> PrivateKey | None:
    """The gate's key from LEPTON_CI_SIGNING_KEY (the key itself) or LEPTON_CI_SIGNING_KEY_FILE (a path)."""
    value = os.environ.get(KEY_ENV)
    if value:
        return decode_private(value, KEY_ENV)
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{KEY_FILE_ENV}: cannot read the private key file {path}: "
                f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
            ) from None
        return decode_private(text, f"{KEY_FILE_ENV} ({path})")
    return None


def _decode_public(text: str, source: str) -> PublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(text.strip().encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UserError(f"{source} is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UserError(f"{source} must be an EC public key")
    return PublicKey(key, source)


def parse_public_key(value: str, base_dir: Path, source: str) -> PublicKey:
    """A public key given as PEM text or as a path to a PEM file (relative to `base_dir`)."""
    if value.strip().startswith("-----BEGIN"):
        return _decode_public(value, source)
    path = Path(value)
    path = path if path.is_absolute() else base_dir / path
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{source}: cannot read public key file {value}: {getattr(exc, 'strerror', None) or type(exc).__name__}"
        ) from None
    return _decode_public(text, f"{source} ({value})")


def trusted_keys(
    *,
    explicit: Iterable[str] = (),
    config_values: Iterable[str] = (),
    base_dir: Path | None = None,
    config_source: str = "signing.public_key",
) -> list[PublicKey]:
    """The keys a blessing may be signed with: the FIRST source that names any, never a union.
    --public-key, else LEPTON_CI_PUBLIC_KEY, else signing.public_key in lepton.yml (a list during a key
    rotation), else the public half of the private key this job holds. A pinned key (flag or environment)
    replaces the config's keys: lepton.yml may come from the pull request being deployed, and a key it adds
    must not be trusted beside the pinned one. No key at all is an empty list: the caller refuses."""
    base = base_dir or Path.cwd()
    explicit = list(explicit)
    if explicit:
        return [parse_public_key(v, Path.cwd(), "--public-key") for v in explicit]
    env = os.environ.get(PUBLIC_KEY_ENV)
    if env:
        return [parse_public_key(v, Path.cwd(), PUBLIC_KEY_ENV) for v in _split_pem_list(env)]
    keys = [parse_public_key(v, base, config_source) for v in config_values]
    if not keys:
        private = load_private_key()
        if private is not None:
            keys.append(private.public)
    return keys


def _split_pem_list(value: str) -> list[str]:
    """LEPTON_CI_PUBLIC_KEY may hold several PEM blocks (a key rotation) or one path."""
    if "-----BEGIN" not in value:
        return [value]
    blocks = value.split("-----END PUBLIC KEY-----")
    return [b.strip() + "\n-----END PUBLIC KEY-----\n" for b in blocks if "-----BEGIN" in b]


def generate_pair(directory: Path, name: str = "lepton-signing", *, force: bool = False) -> tuple[Path, Path]:
    """Write NAME.key (private, 0600) and NAME.pub (public) under `directory`."""
    from cryptography.hazmat.primitives.asymmetric import ec

    priv_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists() and not force:
            raise UserError(f"{p} exists; pass --force to replace it (a replaced key cannot verify old blessings)")
    directory.mkdir(parents=True, exist_ok=True)
    private = PrivateKey(ec.generate_private_key(ec.SECP256R1()), str(priv_path))
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private.pem)
    os.chmod(priv_path, 0o600)
    pub_path.write_bytes(private.public.pem)
    return priv_path, pub_path


def one_line_private(private: PrivateKey) -> str:
    """The base64 DER form of a private key, for CI secret stores that mangle line breaks."""
    from cryptography.hazmat.primitives import serialization

    der = private.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return base64.b64encode(der).decode()


# --- the OMS signature over the model files -----------------------------------------------------------


@contextlib.contextmanager
def _private_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lepton-sign-"))
    os.chmod(d, 0o700)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _hashing_config() -> Any:
    from model_signing import hashing

    # Git-looking names are part of the model like every other file: nothing in a model dir is skipped.
    cfg = hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
    cfg._ignore_git_paths = False  # model-signing 1.1.1 has no setter; verify uses the same config
    return cfg


def sign_model_dir(model_dir: Path, private: PrivateKey) -> dict[str, Any]:
    """The OMS bundle (a sigstore bundle with a DSSE envelope over an in-toto statement naming every
    file's sha256) for the files under `model_dir`."""
    from model_signing import signing as oms_signing

    with _private_dir() as tmp:
        key_path, sig_path = tmp / "key.pem", tmp / "model.sig"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private.pem)
        try:
            (
                oms_signing.Config()
                .set_hashing_config(_hashing_config())
                .use_elliptic_key_signer(private_key=key_path)
                .sign(model_dir, sig_path)
            )
        except Exception as exc:  # noqa: BLE001 - the library raises many kinds; signing failed either way
            raise TrustError(
                f"model-signing could not sign {model_dir}: {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        return json.loads(sig_path.read_text())


def verify_model_dir(model_dir: Path, bundle: Any, key: PublicKey) -> str | None:
    """None when the OMS bundle verifies over exactly the files under `model_dir`; else why not."""
    if not isinstance(bundle, dict):
        return "the model signature is missing or not a JSON object"
    try:
        from model_signing import verifying
    except ImportError:
        return "the model-signing package is not installed, so the model signature cannot be checked"
    with _private_dir() as tmp:
        pub_path, sig_path = tmp / "key.pub", tmp / "model.sig"
        pub_path.write_bytes(key.pem)
        sig_path.write_text(json.dumps(bundle))
        try:
            with contextlib.redirect_stdout(_Discard()):  # the library prints warnings on stdout
                (
                    verifying.Config()
                    .set_hashing_config(_hashing_config())
                    .use_elliptic_key_verifier(public_key=pub_path)
                    .verify(model_dir, sig_path)
                )
        except Exception as exc:  # noqa: BLE001 - any failure to verify is a refusal
            return f"the model-signing signature does not verify: {_first_line(exc)}"
    return None


class _Discard:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# --- the gate record ----------------------------------------------------------------------------------


def bundle_digest(bundle: Any) -> str:
    return "sha256:" + sha256_bytes(canonical_json(bundle))


def blessing_payload(record: GateRecord, model_signature_digest: str | None) -> bytes:
    """The canonical bytes a gate signature covers. Named fields only, with a payload type and version
    of their own: a record that gains fields, or a new record schema version, verifies unchanged."""
    candidate = record.candidate if isinstance(record.candidate, dict) else {}
    body = {
        "type": PAYLOAD_TYPE,
        "v": PAYLOAD_VERSION,
        "model": record.model,
        "verdict": record.verdict,
        "created": record.created,
        "candidate": {k: candidate.get(k) for k in ("digest", "run_id", "metrics", "git", "model_file", "framework")},
        "baseline": record.baseline,
        "results": record.results,
        "model_signature": model_signature_digest,
    }
    return canonical_json(body)


def _signature_bytes(private: PrivateKey, payload: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(private.key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def sign(record: GateRecord, private: PrivateKey | None, model_dir: Path | None = None) -> GateRecord:
    """Sign the gate record (and, given the candidate's files, the files in the OMS format)."""
    if private is None:
        record.signature = {"alg": "none", "reason": f"{KEY_ENV} is not set: this gate record is unsigned"}
        return record
    bundle = sign_model_dir(model_dir, private) if model_dir is not None else None
    digest = bundle_digest(bundle) if bundle is not None else None
    record.signature = {
        "alg": ALG,
        "key_id": private.public.key_id,
        "value": _signature_bytes(private, blessing_payload(record, digest)),
        "model_signature": {"format": OMS_FORMAT, "digest": digest, "bundle": bundle} if bundle is not None else None,
    }
    return record


def verify(record: GateRecord, keys: list[PublicKey]) -> tuple[bool, str]:
    """(valid, reason) for the gate record's own signature. Reasons never hold key material."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    sig = record.signature if isinstance(record.signature, dict) else {}
    alg = sig.get("alg")
    if alg in (None, "none"):
        return False, "the gate record is unsigned"
    if alg == "hmac-sha256":
        return False, (
            "the gate record carries an HMAC signature from lepton-ci 0.1, which any verifier could forge; "
            "run the gate again with an EC key (`lepton-ci keys generate`)"
        )
    if alg != ALG:
        return False, f"the gate record's signature algorithm {str(alg)[:40]!r} is not {ALG}"
    if not keys:
        return False, (
            f"no public key to check the gate signature with (set signing.public_key in lepton.yml, "
            f"{PUBLIC_KEY_ENV} or --public-key)"
        )
    kid = sig.get("key_id")
    key = next((k for k in keys if k.key_id == kid), None)
    if key is None:
        known = ", ".join(k.key_id for k in keys)
        return False, f"the gate record was signed with key {str(kid)[:20]}, which is not a trusted key ({known})"
    ms = sig.get("model_signature")
    digest = None
    if ms is not None:
        if not isinstance(ms, dict) or bundle_digest(ms.get("bundle")) != ms.get("digest"):
            return False, "the model signature in the gate record does not match its digest"
        if ms.get("format") != OMS_FORMAT:
            return False, f"the model signature's format {str(ms.get('format'))[:40]!r} is not {OMS_FORMAT}"
        digest = ms.get("digest")
    try:
        raw = base64.b64decode(str(sig.get("value", "")), validate=True)
        key.key.verify(raw, blessing_payload(record, digest), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False, "the gate signature does not match: the record was changed after it was signed"
    return True, f"signature verified (key {key.key_id})"


def signing_key_for(record: GateRecord, keys: list[PublicKey]) -> PublicKey | None:
    sig = record.signature if isinstance(record.signature, dict) else {}
    return next((k for k in keys if k.key_id == sig.get("key_id")), None)
