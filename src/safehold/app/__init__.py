"""Use cases: what a command does, independent of how the CLI parses and prints it."""
