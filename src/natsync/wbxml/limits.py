"""Limits on what the decoder accepts, each with its reason.

A WBXML document comes from the network before the peer is trusted with much, so every
quantity the decoder allocates for is bounded, and bounded relative to the input: the decoder
never holds more than a small multiple of the document in memory, and never loops longer than
the document is long.
"""

from __future__ import annotations

#: Largest document accepted. The biggest legitimate EAS requests are SendMail/SmartReply with a
#: whole MIME message as OPAQUE (Exchange's default maximum message size is 25-35 MB, already
#: base64 inside the MIME); 64 MiB leaves room for that and bounds what one request can cost.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024

#: Deepest element nesting (the root is at depth 1). The deepest EAS documents (an attendee of a
#: calendar exception inside a Sync Add) nest about 12 levels; 64 is far beyond any real
#: message and keeps the encoder's recursion and the decoder's stack trivially small.
MAX_DEPTH = 64

#: Longest single value (one STR_I/STR_T string or one OPAQUE blob). A MIME body sent inline
#: (AirSyncBase Data, Type 4) or as OPAQUE can be as large as the message itself, so this is the
#: document limit; it is named so the server can lower it per command.
MAX_STRING_BYTES = MAX_DOCUMENT_BYTES

#: Largest string table. EAS peers always send an empty table (header ``03 01 6A 00``); WBXML
#: allows one, so we read a small one, but a table is only worth a few names at most.
MAX_STRING_TABLE_BYTES = 64 * 1024

#: Most elements in one document. Each element costs ~150 bytes of Python objects against one
#: byte of WBXML, so this bounds memory where the byte limit cannot. A Sync response of the
#: largest window (512 items, MS-ASCMD 2.2.3.199) with rich calendar items stays well below it.
MAX_ELEMENTS = 500_000

#: Longest multi-byte integer (WBXML 1.3 section 5.1: mb_u_int32 is at most 32 bits, 5 bytes).
MAX_MB_U_INT32_BYTES = 5
