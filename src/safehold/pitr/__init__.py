"""Point-in-time recovery for PostgreSQL: WAL archiving into the repository (`wal-push`),
base backups, the WAL chain and its window, and restores to a moment (see README
"Point-in-time recovery" and docs/format.md "WAL archive")."""
