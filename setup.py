"""Build step for the one C module; everything else is in pyproject.toml.

natsync.edge._speedups is optional: without a C compiler and Python's headers the build goes
on without it and natsync.edge.http uses its Python parser alone (same results, slower).
`make test` installs the compiler and headers (scripts/ensure-apt.sh) and its tests require
the module to be there.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "natsync.edge._speedups",
            ["src/natsync/edge/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        # Session-ticket keys shared by the edge's workers (natsync.edge.tickets); optional too:
        # without it (or libssl's headers) each worker keeps OpenSSL's own key.
        Extension(
            "natsync.edge._tickets",
            ["src/natsync/edge/_tickets.c"],
            optional=True,
            libraries=["ssl", "crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        # The TLS transport's reads and writes (natsync.edge.transport, issue 27): one recv per
        # record, no Python exception per "want read"; optional too (else through _ssl).
        Extension(
            "natsync.edge._tlsio",
            ["src/natsync/edge/_tlsio.c"],
            optional=True,
            libraries=["ssl", "crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        # The WBXML codec's common case (natsync.wbxml.speedups); optional in the same way.
        Extension(
            "natsync.wbxml._speedups",
            ["src/natsync/wbxml/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ]
)
