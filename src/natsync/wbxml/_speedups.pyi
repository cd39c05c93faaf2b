from collections.abc import Callable

from natsync.wbxml.tree import Element

def configure(
    element_type: type[Element],
    decode_tables: tuple[tuple[tuple[str, str] | None, ...] | None, ...],
    encode_map: dict[str, dict[str, int]],
    xml_text: Callable[[str], str],
    limits: tuple[int, int, int, int],
    /,
) -> None: ...
def decode(data: bytes, /) -> Element | None: ...
def encode(root: Element, /) -> bytes | None: ...
