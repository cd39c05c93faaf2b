"""Certificates: the private CA (ca), what a phone will say about a chain (check, sans-I/O),
getting chains and trust stores (fetch), exporting the CA for phones (export), ACME (acme, jose,
acme_responders, dns01) and hot reload (reload). See docs/cert.md."""

from natsync.cert.ca import CA, CAError, init_ca, load_ca, load_or_init_ca

__all__ = ["CA", "CAError", "init_ca", "load_ca", "load_or_init_ca"]
