"""The plan's Redactor: every secret value a plan names (its variables, the passwords in its
URLs), masked in any text. URL redaction and the secret-name test are the ground ones in
`safehold/redaction.py`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from safehold.redaction import MASK, is_secret_name, redact_url, secret_forms, url_password

_SHORT = 6  # secrets shorter than this are only replaced as whole words


class Redactor:
    """Knows every secret value of a plan and replaces it with `***` in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Treat `secret` (and its percent-encoded and -decoded forms) as secret from now on."""
        self._secrets.update(secret_forms(secret))

    def add_url(self, url: str) -> None:
        """Treat the password in `url` (if it has one) and its secret query values as secret."""
        password = url_password(url)
        if password:
            self.add(password)
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
        text = redact_url(text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= _SHORT:
                text = text.replace(secret, MASK)
            else:
                pattern = rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])"
                text = re.sub(pattern, MASK, text)
        return text

    __call__ = redact
