"""`natsync wbxml decode|encode`: the codec on the command line.

Thin: read the file (``-`` is stdin), call ``natsync.wbxml``, write the result. A bad document is
reported with the codec's message (what was wrong and at which byte) and exit status 1.
"""

from __future__ import annotations

from typing import BinaryIO

import click

from natsync.wbxml import WBXMLError, decode, encode, from_xml, to_xml
from natsync.wbxml.limits import MAX_DOCUMENT_BYTES


def _read(source: BinaryIO) -> bytes:
    # Read one byte past the limit so an oversized input is refused by the codec, not loaded.
    return source.read(MAX_DOCUMENT_BYTES + 1)


def _fail(exc: WBXMLError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    raise SystemExit(1)


@click.group()
def wbxml() -> None:
    """Decode WBXML to readable XML, or encode XML to WBXML."""


@wbxml.command("decode")
@click.argument("source", type=click.File("rb"))
@click.option("--doctype", is_flag=True, help="Add libwbxml's ActiveSync DOCTYPE line.")
@click.option("--compact", is_flag=True, help="One line, no indentation.")
def decode_command(source: BinaryIO, doctype: bool, compact: bool) -> None:
    """Print the WBXML document SOURCE (a file, or - for stdin) as readable XML.

    Opaque values (MIME, attachment data, conversation ids) appear as base64.
    """
    try:
        tree = decode(_read(source))
    except WBXMLError as exc:
        _fail(exc)
        return
    click.echo(to_xml(tree, doctype=doctype, indent=None if compact else "  "), nl=False)


@wbxml.command("encode")
@click.argument("source", type=click.File("rb"))
@click.option(
    "-o",
    "--output",
    type=click.File("wb"),
    default="-",
    show_default=True,
    help="Where to write the WBXML bytes.",
)
def encode_command(source: BinaryIO, output: BinaryIO) -> None:
    """Encode the XML document SOURCE (as `natsync wbxml decode` prints it) to WBXML bytes."""
    try:
        data = encode(from_xml(_read(source)))
    except WBXMLError as exc:
        _fail(exc)
        return
    output.write(data)
    output.flush()
