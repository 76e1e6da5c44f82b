"""Keeping secrets out of everything safehold prints: URL passwords and secret variables."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
_SECRET_NAME = re.compile(r"PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|PRIVATE", re.IGNORECASE)
# scheme://[userinfo@]rest inside any text (up to whitespace or a quote).
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s\"'<>]*)")
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")  # `${DB_PASSWORD}`: a name, no secret
_SHORT = 6  # secrets shorter than this are only replaced as whole words


def is_secret_name(name: str) -> bool:
    """Whether a variable or parameter name looks like it holds a secret (PASSWORD, API_KEY…)."""
    return bool(_SECRET_NAME.search(name))


def _split_userinfo(rest: str) -> tuple[str, str, str] | None:
    """(user, password, what follows the @) of the text after `scheme://`, if it has a password.

    The userinfo normally ends at the last @ of the authority; a password with a raw `/`, `?`
    or `#` (an invalid URL people still write) is caught by looking for `user:…@` further on."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    userinfo, at, after = rest[:end].rpartition("@")
    if at:
        after += rest[end:]
    else:
        userinfo, at, after = rest.partition("@")
        if not at:
            return None
    user, colon, password = userinfo.partition(":")
    if not colon or not password or _REFERENCE.fullmatch(password):
        return None
    return user, password, after


def url_password(url: str) -> str | None:
    """The password in a URL's userinfo, as written (percent-encoded or not), if any."""
    match = _URL.search(url)
    split = _split_userinfo(match.group("rest")) if match else None
    return split[1] if split else None


def _mask_userinfo(match: re.Match[str]) -> str:
    split = _split_userinfo(match.group("rest"))
    if split is None:
        return match.group(0)
    user, _password, after = split
    return f"{match.group('scheme')}{user}:{MASK}@{after}"


_QUERY_PARAM = re.compile(r"(?P<key>[?&;][^=&#\s]*=)(?P<value>[^&#\s]*)")


def _mask_query_param(match: re.Match[str]) -> str:
    key = match.group("key")
    return key + MASK if is_secret_name(key) and match.group("value") else match.group(0)


def redact_url(url: str) -> str:
    """The URL with its password (and secret-looking query parameters such as `password=`)
    replaced by `***`; user, host, port and database stay, so the location is recognisable."""
    return _QUERY_PARAM.sub(_mask_query_param, _URL.sub(_mask_userinfo, url))


class Redactor:
    """Knows every secret value of a plan and replaces it with `***` in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Treat `secret` (and its percent-encoded and -decoded forms) as secret from now on."""
        for value in {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret))}:
            if value.strip():
                self._secrets.add(value)

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
