"""The version of safehold, in one place (read by the CLI and by `safehold.__version__`)."""

__version__ = "0.1.0"
