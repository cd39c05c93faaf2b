"""The one TLS policy of natsync's listeners and of the edge's link to the server (issue 19):
TLS 1.2 with ECDHE key exchange and AEAD ciphers only, or TLS 1.3 (whose suites are all AEAD
with ephemeral keys); no CBC, no RSA key exchange, no renegotiation, no compression. What the
edge offers phones, the server offers the edge or a phone that reaches it directly, and SMTP
in offers with STARTTLS (Mozilla's "intermediate" configuration less its DHE suites)."""

from __future__ import annotations

import ssl

#: TLS 1.2 suites: ECDHE only (forward secrecy, the key exchange signed by the certificate's
#: key), AEAD only. TLS 1.3 suites are OpenSSL's defaults, all AEAD.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def apply_policy(context: ssl.SSLContext) -> ssl.SSLContext:
    """Restrict *context* (server or client side) to the policy; returns it."""
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    return context


def server_context() -> ssl.SSLContext:
    """A server-side context under the policy (load the certificate into it)."""
    return apply_policy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
