#!/usr/bin/env bash
# A C compiler and the headers of the Python that builds natsync (for natsync/edge/_speedups.c),
# and libssl's headers (natsync/edge/_tickets.c),
# installed with apt when missing. Usage: scripts/ensure-build-tools.sh PYTHON
set -euo pipefail
python="$1"
include="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if command -v cc >/dev/null && [ -f "$include/Python.h" ] && [ -f /usr/include/openssl/ssl.h ]; then
  exit 0
fi
exec "$(dirname "$0")/ensure-apt.sh" gcc libc6-dev "python$version-dev" libssl-dev
