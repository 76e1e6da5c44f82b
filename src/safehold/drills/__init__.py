"""Restore drills: restore a snapshot into a throwaway scratch environment, check it, time it,
and keep the result as a record in the repository (`safehold/drills/`)."""
