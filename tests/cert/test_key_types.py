"""Key types of the private CA: ECDSA P-256 by default, RSA 2048/3072 on request."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from natsync.cert.ca import CAError, init_ca, load_ca, new_key


@pytest.mark.parametrize(
    ("key_type", "bits"), [("ecdsa-p256", 256), ("rsa2048", 2048), ("rsa3072", 3072)]
)
def test_ca_and_server_keys_of_each_type(tmp_path: Path, key_type: str, bits: int) -> None:
    ca = init_ca(tmp_path / "ca", key_type=key_type)
    assert ca.key.key_size == bits
    assert load_ca(tmp_path / "ca").key.key_size == bits
    _, key_path = ca.issue_server_cert(["mail.example.test"], [], tmp_path, key_type=key_type)
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_new_key_families() -> None:
    assert isinstance(new_key(), ec.EllipticCurvePrivateKey)
    assert isinstance(new_key("rsa"), rsa.RSAPrivateKey)


def test_unknown_key_type_names_the_choices() -> None:
    with pytest.raises(CAError, match="rsa3072"):
        new_key("dsa")
