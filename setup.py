"""Build step for natsync's C modules; everything else is in pyproject.toml.

Each module is optional: without a C compiler and Python's headers (or libssl's, for the TLS
ones) the build goes on without it and natsync uses the Python part it speeds up (same results,
slower). `make test` installs the compiler and headers (scripts/ensure-apt.sh) and its tests
require the modules to be there.
"""

from setuptools import Extension, setup

#: Every module's flags: optimised, every warning but unused parameters.
FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
#: What the modules reaching into CPython's _ssl objects share: their layout, in one header.
SSL_LAYOUT = ["src/natsync/edge/_ssl_layout.h"]
#: What the modules reading and writing Python objects' slots share (natsync/edge/_slots.h).
SLOTS = ["src/natsync/edge/_slots.h"]


def optional(name: str, source: str, openssl: bool = False, slots: bool = False) -> Extension:
    """An optional C module from one source file, linked with OpenSSL when *openssl*; *slots*:
    it includes _slots.h."""
    return Extension(
        name,
        [source],
        optional=True,
        libraries=["ssl", "crypto"] if openssl else [],
        depends=(SSL_LAYOUT if openssl else []) + (SLOTS if slots else []),
        extra_compile_args=FLAGS,
    )


setup(
    ext_modules=[
        # The edge's HTTP head parsers and serialisers' common case (natsync.edge.http).
        optional("natsync.edge._speedups", "src/natsync/edge/_speedups.c", slots=True),
        # Session-ticket keys shared by the edge's workers (natsync.edge.tickets) and a new
        # connection's accept and handshake steps; without it each worker keeps OpenSSL's key.
        optional("natsync.edge._tickets", "src/natsync/edge/_tickets.c", openssl=True),
        # The TLS transport's reads and writes (natsync.edge.transport, issue 27): one recv per
        # record, no Python exception per "want read" (else through _ssl).
        optional("natsync.edge._tlsio", "src/natsync/edge/_tlsio.c", openssl=True),
        # The phone connection machine's steady keep-alive moves (natsync.edge.connection,
        # issue 27); without it the Python methods make every move.
        optional("natsync.edge._steady", "src/natsync/edge/_steady.c", slots=True),
        # The WBXML codec's common case (natsync.wbxml.speedups).
        optional("natsync.wbxml._speedups", "src/natsync/wbxml/_speedups.c"),
    ]
)
