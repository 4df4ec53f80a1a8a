"""HTTP Basic authentication for a mount: nginx's ``auth_basic`` and ``auth_basic_user_file``.

A mount with ``auth_basic`` (the realm) and ``auth_basic_user_file`` (an htpasswd
file) answers ``401 Unauthorized`` with a ``WWW-Authenticate: Basic`` challenge (RFC
7617 §2) to a request without a user and password of the file; the request never
reaches its handler. A request let through carries the user's name
(``exchange.remote_user``): ``REMOTE_USER`` for a WSGI application, ``$remote_user``
in the access log.

- **The file** (:class:`UserFile`) is read at start-up (a line it cannot use is a
  start-up error naming the file and line) and again whenever it changes, looked at
  with a ``stat`` per request, so ``htpasswd`` takes effect at once, as with nginx
  (which reads it for every request). A file that no longer reads (removed, made
  unreadable, a bad line written) fails closed: ``500`` and one error in the log per
  change, as nginx answers ``500`` when it cannot open the file.
- **The hashes** are checked by :mod:`twistwsgi.passwords`. The slow ones (MD5-crypt,
  SHA-crypt, bcrypt: deliberately costly) are checked on a worker thread, so a
  client guessing passwords does not hold the reactor; at most
  :data:`MAX_PENDING` wait at once per mount, beyond which a request is answered
  ``503`` (``Retry-After``). Credentials that were right are remembered (a digest of
  them, not the password) until the file changes, so a browser sending them with
  every request costs one check.

Logic on the exchange's request; the hand-over of slow checks to a thread is the
caller's (Twisted only for the log).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from twistwsgi import passwords
from twistwsgi.files import signature
from twistwsgi.http.request import RequestHead
from twistwsgi.routing import answer_error

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange

__all__ = ["MAX_PENDING", "BasicAuth", "Credentials", "UserFile", "UserFileError", "credentials"]

_log = Logger(namespace="twistwsgi.auth")

#: Slow checks one mount lets wait for a thread at once: a flood of guesses is
#: answered 503 beyond, rather than queued without bound.
MAX_PENDING = 64
#: Right credentials remembered per mount (until the file changes).
REMEMBERED = 4096
#: The longest password checked: SHA-crypt's cost grows with its length, and a
#: client sending a long one would make every check cost seconds. libxcrypt, the
#: system's crypt(), refuses longer ones too.
MAX_PASSWORD = 512
#: A file modified less than this many seconds ago is read again at each request:
#: on a file system with coarse timestamps, a rewrite of the same size within one
#: tick keeps every field of its stat (a changed password would go unseen).
SETTLING = 2.0

#: Runs a check off the reactor thread: ``(check, done)`` calls ``done(check())``
#: back in the reactor thread.
CheckRunner = Callable[[Callable[[], bool], Callable[[bool], None]], None]


class UserFileError(ValueError):
    """A user file that cannot be used: the message names the file (and line)."""


class UserFile:
    """An htpasswd file (``user:hash`` lines), read again when it changes.

    Lines are ``name:hash``, anything after a second colon ignored (Apache's
    comment field, as nginx ignores it); blank lines and lines starting with ``#``
    are skipped. A name given twice is an error (which one was meant?).

    Args:
        path: the file.

    Raises:
        UserFileError: at construction, for a file that does not read whole.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._signature: tuple[int, int, int, int, int] | None = None
        self.users: dict[str, str] = {}
        #: Bumped with each change of the file (remembered credentials expire).
        self.generation = 0
        #: Why the file is unusable now, if it is.
        self.broken: str | None = None
        try:
            info: os.stat_result | None = os.stat(path)
        except OSError:
            info = None
        self._load(info, strict=True)

    def refresh(self) -> bool:
        """Read the file again if it changed; whether it is usable now.

        Returns:
            ``False`` when it cannot be read or parsed (see :attr:`broken`).
        """
        try:
            info = os.stat(self.path)
        except OSError as error:
            return self._fail(f"cannot read {self.path}: {error.strerror}", None)
        if signature(info) != self._signature or time.time() - info.st_mtime < SETTLING:
            self._load(info, strict=False)
        return self.broken is None

    def _load(self, info: os.stat_result | None, *, strict: bool) -> None:
        try:
            if info is None:
                raise UserFileError(f"{self.path}: no such file")
            try:
                with open(self.path, "rb") as handle:
                    data = handle.read()
            except OSError as error:
                raise UserFileError(f"cannot read {self.path}: {error.strerror}") from None
            users = parse_user_file(data, self.path)
        except UserFileError as error:
            if strict:
                raise
            self._fail(str(error), info)
            return
        changed = users != self.users or self.broken is not None
        self.users = users
        self.broken = None
        self._signature = signature(info)
        if changed:
            self.generation += 1

    def _fail(self, problem: str, info: os.stat_result | None) -> bool:
        if self.broken != problem:
            self.generation += 1  # nothing remembered holds across a broken file
        self.broken = problem
        self.users = {}
        self._signature = signature(info) if info is not None else None
        return False


def parse_user_file(data: bytes, path: str) -> dict[str, str]:
    """The users of an htpasswd file and their hashes.

    Raises:
        UserFileError: ``path:line: problem`` for the first line that cannot be used.
    """
    users: dict[str, str] = {}
    try:
        # An editor's byte order mark would otherwise be part of the first name.
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as error:
        where = data[: error.start].count(b"\n") + 1
        raise UserFileError(f"{path}:{where}: not UTF-8 text") from None
    # Lines end at LF (CR LF too): not at U+2028 and the other characters
    # str.splitlines() also breaks at, which a {PLAIN} password may hold.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, rest = line.partition(":")
        if not colon or not name:
            raise UserFileError(f"{path}:{number}: expected name:hash")
        stored = rest.split(":", 1)[0].strip()
        if not stored:
            raise UserFileError(f"{path}:{number}: {name!r} has no password hash")
        if stored == "{PLAIN}":
            raise UserFileError(f"{path}:{number}: {name!r} has an empty password")
        try:
            passwords.check_hash(stored)
        except ValueError as error:
            raise UserFileError(f"{path}:{number}: {name!r}: {error}") from None
        if name in users:
            raise UserFileError(f"{path}:{number}: {name!r} is given twice")
        users[name] = stored
    if not users:
        raise UserFileError(f"{path}: no users")
    return users


class Credentials:
    """A user name and password from an ``Authorization: Basic`` field."""

    __slots__ = ("password", "token", "user")

    def __init__(self, user: str, password: bytes, token: bytes) -> None:
        self.user = user
        self.password = password
        self.token = token  # the field's credentials, as sent (what is remembered)


def credentials(request: RequestHead) -> Credentials | None:
    """The Basic credentials of ``request``, or ``None`` if it has none usable.

    RFC 7617 §2: ``Basic`` (any case) and the base64 of ``user-id ":" password``;
    the user-id has no colon. Names are UTF-8 (the ``charset="UTF-8"`` the challenge
    announces, §2.1). Several ``Authorization`` fields are none usable.
    """
    found = None
    for name, value in request.headers:
        if name.lower() == b"authorization":
            if found is not None:
                return None
            found = value
    if found is None:
        return None
    scheme, _, token = found.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"basic" or not token:
        return None
    try:
        # Padding may be left out (nginx takes such tokens as well).
        decoded = base64.b64decode(token + b"=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    user_id, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        user = user_id.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return Credentials(user, password, token)


class BasicAuth:
    """One mount's Basic authentication (reactor thread).

    Args:
        realm: what the challenge names (``auth_basic "realm"``).
        users: the htpasswd file.
        run_check: runs a slow check off the reactor thread; ``None`` runs it here.
    """

    def __init__(self, realm: str, users: UserFile, run_check: CheckRunner | None) -> None:
        self.realm = realm
        self.users = users
        self._run_check = run_check
        escaped = realm.replace("\\", "\\\\").replace('"', '\\"')
        # RFC 7617 §2.1: the charset parameter says names and passwords are UTF-8.
        self.challenge = f'Basic realm="{escaped}", charset="UTF-8"'.encode("latin-1")
        # Credentials that were right, by a keyed digest (the key is this process's
        # alone: nothing in memory can be matched against a list of guesses).
        self._remembered: OrderedDict[bytes, str] = OrderedDict()
        self._key = os.urandom(32)
        self._generation = users.generation
        self._logged_problem: str | None = None
        self.pending = 0

    def check(self, exchange: Exchange, admit: Callable[[Exchange], None]) -> None:
        """Let ``exchange`` on to ``admit`` with its user set, or answer it.

        ``admit`` may be called later (a slow check), or never (401, 500, 503).
        """
        users = self.users
        if not users.refresh():
            answer_error(exchange, 500, _ERROR_BODY)
            if users.broken != self._logged_problem:
                # One line for each change of the file, not one per request.
                self._logged_problem = users.broken
                _log.error(
                    "{problem}: requests for its mount are answered 500 until it is fixed",
                    problem=users.broken,
                )
            return
        if users.generation != self._generation:
            self._remembered.clear()
            self._generation = users.generation
        given = credentials(exchange.request)
        if given is None:
            self._challenge(exchange)
            return
        key = hmac.digest(self._key, given.token, hashlib.sha256)
        remembered = self._remembered.get(key)
        if remembered is not None:
            self._remembered.move_to_end(key)
            exchange.remote_user = remembered
            admit(exchange)
            return
        stored = users.users.get(given.user)
        if stored is None or len(given.password) > MAX_PASSWORD:
            self._challenge(exchange)
            return
        generation = users.generation

        def checked(right: bool) -> None:
            if exchange.finished:
                return  # the client left meanwhile
            if not right:
                self._challenge(exchange)
                return
            if generation == self._generation:
                remembered = self._remembered
                remembered[key] = given.user
                if len(remembered) > REMEMBERED:
                    remembered.popitem(last=False)
            exchange.remote_user = given.user
            admit(exchange)

        password = given.password
        if self._run_check is None or not passwords.is_slow(stored):
            checked(passwords.verify_password(password, stored))
            return
        if self.pending >= MAX_PENDING:
            answer_error(exchange, 503, _BUSY_BODY, [(b"Retry-After", b"1")])
            return
        self.pending += 1

        def done(right: bool) -> None:
            self.pending -= 1
            checked(right)

        self._run_check(lambda: passwords.verify_password(password, stored), done)

    def _challenge(self, exchange: Exchange) -> None:
        answer_error(exchange, 401, _UNAUTHORIZED, [(b"WWW-Authenticate", self.challenge)])


_UNAUTHORIZED = b"Unauthorized\n"
_ERROR_BODY = b"Internal Server Error\n"
_BUSY_BODY = b"Service Unavailable: too many password checks waiting, try again\n"
