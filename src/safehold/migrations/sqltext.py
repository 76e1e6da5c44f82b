"""Where statements start: line numbers past leading blanks and comments."""

from __future__ import annotations


def line_of(text: str, offset: int) -> int:
    """The 1-based line of the first real token at or after character `offset`."""
    position = skip_blank_and_comments(text, offset)
    return text.count("\n", 0, position) + 1


def skip_blank_and_comments(text: str, offset: int) -> int:
    position = offset
    while position < len(text):
        if text[position].isspace():
            position += 1
        elif text.startswith("--", position) or text.startswith("#", position):
            end = text.find("\n", position)
            position = len(text) if end < 0 else end + 1
        elif text.startswith("/*", position):
            end = text.find("*/", position + 2)
            position = len(text) if end < 0 else end + 2
        else:
            break
    return position


def char_offset(text: str, byte_offset: int) -> int:
    """libpg_query reports byte offsets into the UTF-8 text; callers count characters."""
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))
