"""The command line: parse, call `safehold.app`, print. No logic lives here."""
