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

import json
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
# in a text, a query value ends at a quote (`"url": "…?password=x",` in JSON)
_QUERY_PARAM = re.compile(r"(?P<key>[?&;][^=&#\s\"'<>]*=)(?P<value>[^&#\s\"'<>]*)")
# in a value known to be one location, it ends only at the next parameter
_VALUE_QUERY_PARAM = re.compile(r"(?P<key>[?&;][^=&#]*=)(?P<value>[^&#]*)")


def is_secret_name(name: str) -> bool:
    """Whether a variable or parameter name looks like it holds a secret (PASSWORD, API_KEY…)."""
    return bool(_SECRET_NAME.search(name))


_PORT = re.compile(r"[0-9]{1,5}")


def _split_userinfo(rest: str) -> tuple[str, str, str, str] | None:
    """(user, password, separator, what follows) of the text after `scheme://`, if it has a
    password; the separator is `@`, or empty for a URL whose `@` is missing.

    The userinfo normally ends at the last @ of the authority; a password with a raw `/`, `?`
    or `#` (an invalid URL people still write) is caught by looking for `user:…@` further on.
    A typo that drops the `@` (`postgres://user:pass//host/db`, `postgresql://user:secret/db`)
    leaves `user:pass` where host and port belong: what follows the colon is a password unless
    it is a port number."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    userinfo, at, after = rest[:end].rpartition("@")
    if at:
        after += rest[end:]
    else:
        userinfo, at, after = rest.partition("@")
        if not at:
            authority = rest[:end]
            user, colon, password = authority.partition(":")
            if not colon or authority.startswith("[") or _PORT.fullmatch(password):
                return None
            if not password or _REFERENCE.fullmatch(password):
                return None
            return user, password, "", rest[end:]
    user, colon, password = userinfo.partition(":")
    if not colon or not password or _REFERENCE.fullmatch(password):
        return None
    return user, password, "@", after


def url_password(url: str) -> str | None:
    """The password in a URL's userinfo, as written (percent-encoded or not), if any; also
    of a URL whose `@` is missing (see `_split_userinfo`)."""
    match = _URL.search(url)
    split = _split_userinfo(match.group("rest")) if match else None
    return split[1] if split else None


def _mask_userinfo(match: re.Match[str]) -> str:
    split = _split_userinfo(match.group("rest"))
    if split is None:
        return match.group(0)
    user, _password, separator, after = split
    return f"{match.group('scheme')}{user}:{MASK}{separator}{after}"


def _mask_query_param(match: re.Match[str]) -> str:
    key = match.group("key")
    return key + MASK if is_secret_name(key) and match.group("value") else match.group(0)


def redact_url(text: str) -> str:
    """`text` with the password of every URL in it (and secret-looking query parameters such
    as `password=`) replaced by `***`; user, host, port and database stay, so the location is
    recognisable. Never raises, even on a URL that does not parse."""
    return _QUERY_PARAM.sub(_mask_query_param, _URL.sub(_mask_userinfo, text))


# ----- values by what they are -------------------------------------------------------------
# A value's secrets follow from what it is, not from whether it parses: a plan field that holds
# a location (a database or bucket URL, an endpoint, a repository), a ping or alert URL, or a
# credential. `field_secrets` is the one rule; the plan's Redactor learns from it before the
# plan is validated, so even the errors about a malformed value never echo its secret.

_LOCATION_KEYS = frozenset({"url", "endpoint", "repository", "target", "location", "server"})
_TOKENISH = re.compile(r"[A-Za-z0-9_\-.~%]+")
_SCHEME_WORDS = frozenset(
    [
        "sftp",
        "s3",
        "rest",
        "b2",
        "azure",
        "gs",
        "swift",
        "rclone",
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "http",
        "https",
    ]
)
# `password_file`, `password_env`, `password_command`, `credentials_at` say where a secret is;
# an `access_key_id` names a login (shown, so one can tell which login a destination uses)
_NOT_THE_SECRET = ("_file", "_env", "_command", "_at", "_path", "_id")


def location_secrets(value: str) -> list[str]:
    """The secret parts of a location (a source URL, an endpoint, a repository), well-formed or
    not: the URL's password (also with its `@` missing), a password before an `@` in a value
    without a scheme (`user:pass@host/db`), each long part of that password (a parser may
    split it at a raw `/`), and secret-named query values (`?password=`)."""
    found: list[str] = []
    password = url_password(value)
    if not password and "://" not in value and "@" in value:
        userinfo = value.rpartition("@")[0]
        first, colon, rest = userinfo.partition(":")
        if colon and first.lower() in _SCHEME_WORDS:  # `sftp:user@host:/path`, `postgres:/u:p@`
            userinfo = rest.lstrip("/")
        secret = userinfo.partition(":")[2]  # `user:pass`
        if secret and not _REFERENCE.fullmatch(secret):
            password = secret
    if password:
        found += [password, *secret_pieces(password)]
    for match in _VALUE_QUERY_PARAM.finditer(value):
        if is_secret_name(match.group("key")) and match.group("value"):
            found.append(match.group("value"))
    return found


def mask_location(value: str) -> str:
    """A location as it may be shown: its secrets (`location_secrets`) replaced by `***`
    (a short one only where it stands alone, see `mask_known`)."""
    text = redact_url(value)
    forms = {form for secret in location_secrets(value) for form in secret_forms(secret)}
    return mask_known(text, forms)


def token_secrets(value: str) -> list[str]:
    """The secret parts of a ping or alert URL: everything after `scheme://` (the whole value
    when the scheme is missing), and each part of it that looks like a token (long, or letters
    mixed with digits), so that a token shown on its own is masked too."""
    _, scheme, rest = value.partition("://")
    rest = rest if scheme else value
    if len(rest.strip()) < _MIN_LENGTH:  # `backup = 5` holds no token; masking `5` would
        return []  # mangle every line number
    found = [rest]
    for part in re.split(r"[/@:?&=#,]", rest):
        if not _TOKENISH.fullmatch(part):
            continue
        mixed = any(c.isalpha() for c in part) and any(c.isdigit() for c in part)
        if len(part) >= 16 or (mixed and len(part) >= 10):
            found.append(part)
    return found


def field_secrets(path: tuple[str | int, ...], value: object) -> list[str]:
    """The secrets of the plan value at key path `path` (like `("pings", "backup")`), by what
    the field is: a credential (a secret-looking key name: `password`, `secret_access_key`,
    `token`; not `password_file` and the like, which say where one is, nor `access_key_id`)
    is secret whole; a
    ping or alert URL is secret after its scheme; a location keeps its host but not its
    password. Numbers are judged as text."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return []
    text = str(value)
    if not text.strip():
        return []
    keys = [part for part in path if isinstance(part, str)]
    key = keys[-1] if keys else ""
    if keys[:1] == ["pings"] and key != "timeout":  # also a misspelt `[pings] backpu`
        return token_secrets(text)
    if keys[:2] == ["alerts", "channels"] and key not in ("name", "severity"):  # also `ulr`
        return token_secrets(text)
    if is_secret_name(key) and not key.endswith(_NOT_THE_SECRET):
        return [text] if len(text) >= _MIN_LENGTH else []
    if key in _LOCATION_KEYS or key.startswith("scratch_") or "://" in text:  # not `a@b.c`
        return location_secrets(text)
    return []


# ----- known values ------------------------------------------------------------------------


def secret_forms(secret: str) -> set[str]:
    """`secret` as it may appear in a text: as is, percent-decoded, percent-encoded the ways
    URLs and tools encode it (everything, or keeping `/`, or keeping `@` and `:`), and escaped
    as inside a JSON or TOML string (a `"` or `\\` in it)."""
    decoded = unquote(secret)
    forms = {secret, decoded, quote(secret, safe=""), quote(secret), quote(secret, safe="@:")}
    forms.add(quote(decoded))
    forms.update({json.dumps(form, ensure_ascii=False)[1:-1] for form in (secret, decoded)})
    return {form for form in forms if form.strip()}


_PIECE_SEPARATORS = re.compile(r"[/@:?#&=;,\s]+")
_MIN_PIECE = 6


def secret_pieces(secret: str) -> list[str]:
    """The parts of `secret` between URL separators (`/`, `@`, `:`, `?`…), at least 6
    characters long: a parser that splits a malformed URL elsewhere than the rules here (a
    password with a raw `/` read as host and path) shows such a part on its own."""
    pieces = _PIECE_SEPARATORS.split(secret)
    if len(pieces) < 2:
        return []
    return [piece for piece in pieces if len(piece) >= _MIN_PIECE]


_SHORT = 6  # secrets shorter than this are only replaced where they stand alone


def mask_known(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` (longest first) replaced by `***`; one shorter than 6
    characters only where no letter or digit touches it, so `pw` leaves `pwdb` alone."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= _SHORT:
            text = text.replace(secret, MASK)
        else:
            pattern = rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])"
            text = re.sub(pattern, MASK, text)
    return text


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
