"""Password hashing: scrypt with a per-hash salt, parameters in the string, constant-time check."""

from __future__ import annotations

import pytest

from natsync.auth import passwords
from natsync.auth.passwords import hash_password, needs_rehash, verify_password


@pytest.fixture(scope="module")
def encoded() -> str:
    return hash_password("correct horse battery staple")


def test_the_right_password_verifies_and_wrong_ones_do_not(encoded: str) -> None:
    assert verify_password("correct horse battery staple", encoded)
    assert not verify_password("correct horse battery stapler", encoded)
    assert not verify_password("", encoded)


def test_the_parameters_are_encoded_in_the_hash(encoded: str) -> None:
    scheme, params, salt, digest = encoded.split("$")[1:]
    assert scheme == "scrypt"
    assert params == (f"ln={passwords.SCRYPT_LOG2_N},r={passwords.SCRYPT_R},p={passwords.SCRYPT_P}")
    assert len(passwords._unb64(salt)) == passwords.SALT_BYTES
    assert len(passwords._unb64(digest)) == passwords.HASH_BYTES
    assert not needs_rehash(encoded)


def test_each_hash_has_its_own_salt(encoded: str) -> None:
    again = hash_password("correct horse battery staple")
    assert again != encoded
    assert again.split("$")[3] != encoded.split("$")[3]
    assert verify_password("correct horse battery staple", again)


def test_old_parameters_still_verify_and_ask_for_a_rehash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "SCRYPT_LOG2_N", 10)
    cheap = hash_password("pw-123456")
    monkeypatch.undo()
    assert cheap.split("$")[2].startswith("ln=10,")
    assert verify_password("pw-123456", cheap)
    assert needs_rehash(cheap)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "plain-text-password",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        "$scrypt$ln=15,r=8$c2FsdA$aGFzaA",  # a parameter missing
        "$scrypt$ln=40,r=8,p=1$c2FsdA$aGFzaA",  # a cost that would take the machine down
        "$scrypt$ln=15,r=8,p=1$$aGFzaA",  # no salt
        "$scrypt$ln=15,r=8,p=1$c2FsdA$not base64!",
    ],
)
def test_a_malformed_hash_never_verifies(bad: str) -> None:
    assert not verify_password("anything", bad)
    assert needs_rehash(bad)


def test_non_ascii_passwords_work() -> None:
    encoded = hash_password("pässwörd-✓")
    assert verify_password("pässwörd-✓", encoded)
    assert not verify_password("passwort-✓", encoded)
