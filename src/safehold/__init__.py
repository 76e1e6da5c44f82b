"""safehold: backups for small apps, in restic's repository format, proven by restore drills."""

__version__ = "0.1.0"
