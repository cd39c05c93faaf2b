"""WBXML global tokens and header constants.

WAP-192-WBXML-20010725 (WBXML 1.3), section 7.1 "Global Tokens" and section 5.4-5.6 (header);
EAS use of them in MS-ASWBXML 2.1.2.
"""

from __future__ import annotations

from enum import IntEnum


# WBXML 1.3 section 7.1, table "Global tokens" (the same in every code page).
class GlobalToken(IntEnum):
    SWITCH_PAGE = 0x00
    END = 0x01
    ENTITY = 0x02
    STR_I = 0x03
    LITERAL = 0x04
    EXT_I_0 = 0x40
    EXT_I_1 = 0x41
    EXT_I_2 = 0x42
    PI = 0x43
    LITERAL_C = 0x44
    EXT_T_0 = 0x80
    EXT_T_1 = 0x81
    EXT_T_2 = 0x82
    STR_T = 0x83
    LITERAL_A = 0x84
    EXT_0 = 0xC0
    EXT_1 = 0xC1
    EXT_2 = 0xC2
    OPAQUE = 0xC3
    LITERAL_AC = 0xC4


# WBXML 1.3 section 5.8.2: the two high bits of a tag token.
TAG_CONTENT_BIT = 0x40
TAG_ATTRIBUTES_BIT = 0x80
TAG_ID_MASK = 0x3F
#: Tag identities 0x00-0x04 are the global tokens; code page tags start at 0x05.
FIRST_TAG_ID = 0x05


# WBXML 1.3 section 5.4: version byte = (major - 1) << 4 | minor.
class Version(IntEnum):
    V1_1 = 0x01
    V1_2 = 0x02
    V1_3 = 0x03


#: WBXML 1.3 section 7.2: public identifier 1 = "unknown or missing", what EAS peers send.
PUBLIC_ID_UNKNOWN = 0x01
#: IANA MIBenum of UTF-8 (WBXML 1.3 section 5.6); the only charset EAS uses.
CHARSET_UTF8 = 106
#: What EAS peers put in front of every body: 1.3, unknown public id, UTF-8, empty string table.
EAS_HEADER = bytes((Version.V1_3, PUBLIC_ID_UNKNOWN, CHARSET_UTF8, 0x00))
