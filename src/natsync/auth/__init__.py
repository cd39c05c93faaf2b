"""Authentication primitives: password hashing (``natsync.auth.passwords``)."""

from natsync.auth.passwords import hash_password, needs_rehash, verify_password

__all__ = ["hash_password", "needs_rehash", "verify_password"]
