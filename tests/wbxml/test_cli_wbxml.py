"""`natsync wbxml decode|encode` through click's runner, on real files and stdin."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from natsync.cli import main
from natsync.wbxml import E, decode, encode, samples, to_xml

EXAMPLE = E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0"))
EXAMPLE_BYTES = bytes.fromhex("03016a00000756520330000101")


def test_decode_file_prints_readable_xml(tmp_path: Path) -> None:
    path = tmp_path / "foldersync.wbxml"
    path.write_bytes(EXAMPLE_BYTES)
    result = CliRunner().invoke(main, ["wbxml", "decode", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == to_xml(EXAMPLE)
    assert '<FolderSync xmlns="FolderHierarchy:">' in result.output


def test_decode_stdin_with_doctype_and_compact() -> None:
    result = CliRunner().invoke(
        main, ["wbxml", "decode", "--doctype", "--compact", "-"], input=EXAMPLE_BYTES
    )
    assert result.exit_code == 0, result.output
    assert result.output == to_xml(EXAMPLE, doctype=True, indent=None)


def test_decode_bad_input_exits_1_with_the_codec_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.wbxml"
    path.write_bytes(bytes.fromhex("03016a00 45 c5 01".replace(" ", "")))
    result = CliRunner().invoke(main, ["wbxml", "decode", str(path)])
    assert result.exit_code == 1
    assert "error: tag 0xc5 has the attributes bit set" in result.output
    assert "(at byte 5)" in result.output


def test_decode_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["wbxml", "decode", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "No such file" in result.output


def test_encode_to_stdout_and_to_a_file(tmp_path: Path) -> None:
    source = tmp_path / "foldersync.xml"
    source.write_text(to_xml(EXAMPLE, doctype=True))
    result = CliRunner().invoke(main, ["wbxml", "encode", str(source)])
    assert result.exit_code == 0
    assert result.stdout_bytes == EXAMPLE_BYTES
    out = tmp_path / "out.wbxml"
    result = CliRunner().invoke(main, ["wbxml", "encode", str(source), "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_bytes() == EXAMPLE_BYTES


def test_decode_then_encode_reproduces_the_bytes(tmp_path: Path) -> None:
    runner = CliRunner()
    for tree in [*samples.small_documents(), samples.sync_response(emails=3)]:
        wire = encode(tree)
        xml = runner.invoke(main, ["wbxml", "decode", "-"], input=wire)
        assert xml.exit_code == 0
        back = runner.invoke(main, ["wbxml", "encode", "-"], input=xml.stdout_bytes)
        assert back.exit_code == 0
        assert back.stdout_bytes == wire
        assert decode(back.stdout_bytes) == tree


def test_encode_bad_xml_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["wbxml", "encode", "-"], input=b"<Sync xmlns='AirSync:'><Subject>x</Subject></Sync>"
    )
    assert result.exit_code == 1
    assert "error: unknown tag 'Subject' in namespace AirSync" in result.output


def test_help_lists_decode_and_encode() -> None:
    result = CliRunner().invoke(main, ["wbxml", "--help"])
    assert result.exit_code == 0
    assert "decode" in result.output
    assert "encode" in result.output
