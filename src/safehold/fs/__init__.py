"""File trees in and out of a repository: the archiver (backup) and the restorer."""
