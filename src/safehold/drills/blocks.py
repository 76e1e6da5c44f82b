"""The blocks a runbook is built of (headings, paragraphs, lists, code, tables), rendered to
Markdown and HTML by drills/runbook.py."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Block:
    kind: str  # h1 h2 h3 p ul ol code table
    text: str = ""
    items: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
