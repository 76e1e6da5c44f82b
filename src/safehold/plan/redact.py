"""The plan's Redactor: every secret value a plan names (its variables, the passwords in its
URLs), masked in any text. URL redaction and the secret-name test are the ground ones in
`safehold/redaction.py`."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from safehold.redaction import (
    is_secret_name,
    mask_known,
    redact_url,
    secret_forms,
    secret_pieces,
    url_password,
)


class Redactor:
    """Knows every secret value of a plan and replaces it with `***` in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Treat `secret` (and its percent-encoded, -decoded and JSON-escaped forms) as secret
        from now on."""
        self._secrets.update(secret_forms(secret))

    def add_url(self, url: str) -> None:
        """Treat the password in `url` (if it has one, with its long parts between URL
        separators, `redaction.secret_pieces`) and its secret query values as secret."""
        password = url_password(url)
        if password:
            self.add(password)
            for piece in secret_pieces(password):
                self.add(piece)
        try:
            query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        except ValueError:
            return
        for key, value in query:
            if is_secret_name(key):
                self.add(value)

    def __len__(self) -> int:
        return len(self._secrets)

    def redact(self, text: str) -> str:
        """`text` with URL passwords and every known secret replaced by `***`."""
        return mask_known(redact_url(text), self._secrets)

    __call__ = redact
