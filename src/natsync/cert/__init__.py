"""Certificates: a minimal private CA now; issue, lint, pin and ACME come later."""

from natsync.cert.ca import CA, CAError, init_ca, load_ca, load_or_init_ca

__all__ = ["CA", "CAError", "init_ca", "load_ca", "load_or_init_ca"]
