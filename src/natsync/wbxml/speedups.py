"""The codec's optional C common case (natsync/wbxml/_speedups.c), configured from the tables.

The Python codec (decoder.py, encoder.py) is the reference. When the C module is built and
``NATSYNC_PURE_PYTHON`` is not set (the same switch as the edge's), ``decode`` and ``encode`` try
it first; it answers ``None`` for anything it does not handle (a malformed document, a limit, a
string table, an unusual value type ...) and the Python codec then decodes, encodes or raises
``WBXMLError`` as it always did. tests/wbxml/test_speedups.py and fuzz/fuzz_wbxml_speedups.py
check that the two give the same results.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from natsync.wbxml.chars import xml_text
from natsync.wbxml.codepages import code_pages
from natsync.wbxml.limits import MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_ELEMENTS, MAX_STRING_BYTES
from natsync.wbxml.tree import Element

#: Set in the environment (to anything), the codec runs on Python alone (natsync.edge.http too).
PURE_PYTHON_ENV = "NATSYNC_PURE_PYTHON"

try:  # optional: built by setup.py when a C compiler and Python's headers are there
    from natsync.wbxml import _speedups
except ImportError:  # pragma: no cover - a build without a C compiler
    _speedups = None  # type: ignore[assignment]

#: The C module when it is built and not switched off, else None.
speedups = None if os.environ.get(PURE_PYTHON_ENV) else _speedups

#: The limits the C side was configured with: the codec uses it only while natsync.wbxml's limits
#: are these (a limit lowered at run time, as the tests do, is then the Python codec's to apply).
C_LIMITS = (MAX_DOCUMENT_BYTES, MAX_DEPTH, MAX_ELEMENTS, MAX_STRING_BYTES)

c_decode: Callable[[bytes], Element | None] | None = None
c_encode: Callable[[Element], bytes | None] | None = None
if speedups is not None:
    _pages = code_pages()
    _encode_map: dict[str, dict[str, int]] = {}
    for (_namespace, _tag), (_page, _bare, _content) in _pages.encode_table.items():
        _encode_map.setdefault(_namespace, {})[_tag] = _page << 8 | _bare[0]
    speedups.configure(
        Element,
        _pages.decode_tables,
        _encode_map,
        xml_text,
        C_LIMITS,
    )
    c_decode = speedups.decode
    c_encode = speedups.encode
