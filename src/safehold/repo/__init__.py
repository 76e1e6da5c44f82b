"""restic repository format v2, one module per kind of object (see docs/format.md)."""
