"""BodyPreference as a phone sends it: numbers that are not plain ASCII digits are junk and
ignored, numbers past every limit are clamped (natsync.classes.body)."""

from __future__ import annotations

from natsync.classes.body import MAX_PREVIEW_CHARS, MAX_TRUNCATION_SIZE, BodyPreference, BodyType
from natsync.wbxml.tree import E

NS = "AirSyncBase"


def _preference(**values: str) -> BodyPreference:
    return BodyPreference.from_element(
        E(NS, "BodyPreference", *(E(NS, tag, text) for tag, text in values.items()))
    )


def test_plain_numbers_are_read() -> None:
    pref = _preference(Type="2", TruncationSize=" 5120 ", AllOrNone="1", Preview="0100")
    assert (pref.type, pref.truncation_size, pref.all_or_none, pref.preview) == (2, 5120, True, 100)


def test_numbers_that_are_not_ascii_digits_are_ignored() -> None:
    # str.isdigit is true of "²" and "¹²", which int() refuses: ignored, not a traceback
    pref = _preference(Type="²", TruncationSize="¹²", AllOrNone="1²", Preview="-5")
    assert pref.type == BodyType.PLAIN
    assert pref.truncation_size is None
    assert pref.all_or_none is False
    assert pref.preview == 0


def test_numbers_past_every_limit_are_clamped() -> None:
    pref = _preference(TruncationSize="9" * 5000, Preview="0" * 3000 + "9" * 40)
    assert pref.truncation_size == MAX_TRUNCATION_SIZE
    assert pref.preview == MAX_PREVIEW_CHARS
