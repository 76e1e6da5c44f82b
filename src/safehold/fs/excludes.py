"""Exclude patterns, restic-style: a pattern without `/` matches any path component's name;
a pattern with `/` matches the whole absolute path; `*` stays within a component, `**` spans
components. A leading `!` is not supported (rare in practice, and easy to get wrong)."""

from __future__ import annotations

import os
import re
from functools import lru_cache


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[bytes]:
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            if index < len(pattern) and pattern[index] == "/":
                out[-1] = "(?:.*/)?"
                index += 1
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile(("".join(out) + r"\Z").encode("utf-8", "surrogateescape"), re.DOTALL)


class ExcludeMatcher:
    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [p.rstrip("/") for p in patterns if p.strip()]
        self._name_patterns = [_compile(p) for p in self.patterns if "/" not in p]
        self._path_patterns = [
            _compile(os.path.normpath(p) if p.startswith("/") else "**/" + p)
            for p in self.patterns
            if "/" in p
        ]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, name: bytes, absolute_path: bytes) -> bool:
        if any(pattern.match(name) for pattern in self._name_patterns):
            return True
        return any(pattern.match(absolute_path) for pattern in self._path_patterns)
