"""Where safehold keeps its local caches: one rule for every cache (retain-until dates, the
index cache), so they all follow SAFEHOLD_CACHE_DIR the same way."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CACHE_ENV = "SAFEHOLD_CACHE_DIR"


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where safehold keeps local caches (SAFEHOLD_CACHE_DIR, XDG_CACHE_HOME, ~/.cache)."""
    configured = environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    xdg = environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "safehold"
