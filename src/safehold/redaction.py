"""The one home of redaction: URL passwords, secret-looking names, and the process-wide
registry of secrets that everything the CLI prints (errors, warnings, JSON) passes through.

`redact_url` masks the password of every URL in a text (and secret-looking query values such
as `password=`), keeping user, host, port and database so the location stays recognisable.
`redact_secrets` masks given values (and their percent-encoded forms) in a text, for a source
that knows which password it passed to a tool. `register_secret` / `redact` are the last line
of defence: sources and the plan already redact what they produce; this catches what slips
through, e.g. a password echoed back inside a tool's error message. The plan's `Redactor`
(plan/redact.py) builds on these functions.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import quote, unquote

MASK = "***"
_MIN_LENGTH = 4  # shorter values would mangle ordinary words
_lock = threading.Lock()
_secrets: set[str] = set()
_redactors: list[Callable[[str], str]] = []

# ----- names and URLs ----------------------------------------------------------------------

_SECRET_NAME = re.compile(r"PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|PRIVATE", re.IGNORECASE)
# scheme://[userinfo@]rest inside any text (up to whitespace or a quote).
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s\"'<>]*)")
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")  # `${DB_PASSWORD}`: a name, no secret
_QUERY_PARAM = re.compile(r"(?P<key>[?&;][^=&#\s]*=)(?P<value>[^&#\s]*)")


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


def _mask_query_param(match: re.Match[str]) -> str:
    key = match.group("key")
    return key + MASK if is_secret_name(key) and match.group("value") else match.group(0)


def redact_url(text: str) -> str:
    """`text` with the password of every URL in it (and secret-looking query parameters such
    as `password=`) replaced by `***`; user, host, port and database stay, so the location is
    recognisable. Never raises, even on a URL that does not parse."""
    return _QUERY_PARAM.sub(_mask_query_param, _URL.sub(_mask_userinfo, text))


# ----- known values ------------------------------------------------------------------------


def secret_forms(secret: str) -> set[str]:
    """`secret` as it may appear in a text: as is, percent-decoded, and percent-encoded the
    ways URLs and tools encode it (everything, or keeping `/`, or keeping `@` and `:`)."""
    decoded = unquote(secret)
    forms = {secret, decoded, quote(secret, safe=""), quote(secret), quote(secret, safe="@:")}
    forms.add(quote(decoded))
    return {form for form in forms if form.strip()}


def redact_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every given secret (and its encoded forms) replaced by `***`; empty and
    missing values are skipped."""
    forms = {form for secret in secrets if secret for form in secret_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


# ----- the process-wide registry -----------------------------------------------------------


def register_secret(value: str | bytes) -> None:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) >= _MIN_LENGTH:
        with _lock:
            _secrets.add(text)


def register_redactor(redactor: Callable[[str], str]) -> None:
    with _lock:
        _redactors.append(redactor)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
        redactors = list(_redactors)
    for redactor in redactors:
        text = redactor(text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def clear() -> None:
    """Forget everything (tests)."""
    with _lock:
        _secrets.clear()
        _redactors.clear()
