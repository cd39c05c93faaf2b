"""The ActiveSync protocol, sans-I/O: query forms, versions, status codes and one module per
command (MS-ASHTTP, MS-ASCMD, MS-ASPROV). Nothing here opens a socket or reads a clock; the
server adapter passes ``now``, a store transaction and the decoded request, and gets back bytes.
"""

from natsync.eas.errors import EasError, HttpError

__all__ = ["EasError", "HttpError"]
