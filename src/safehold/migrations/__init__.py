"""Migration safety lint: names each schema change that has no way back (pure; no I/O but files)."""
