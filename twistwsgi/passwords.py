"""The password checks behind HTTP Basic authentication's user file.

This module owns one question: does a password a client sent match the hash an
``htpasswd``-style file stores for the user? It knows the formats nginx's
``auth_basic_user_file`` accepts, less the ones that are not safe any more, and it
refuses the rest when the file is loaded (:func:`check_hash`), with a message that
says what to make the entry with instead. Reading the file, the ``Authorization``
header and the 401 are the caller's.

Formats, and where each is specified:

- ``$5$`` and ``$6$`` (SHA-256 and SHA-512 crypt): Ulrich Drepper, "Unix crypt using
  SHA-256 and SHA-512" (https://www.akkadia.org/drepper/SHA-crypt.txt), with its
  optional ``rounds=N$`` (default 5000, clamped to [1000, 999999999]) and a salt of
  at most 16 characters. ``openssl passwd -5/-6`` and ``mkpasswd`` make them.
- ``$1$`` (MD5 crypt, ``openssl passwd -1``): Poul-Henning Kamp's algorithm from
  FreeBSD, salt of at most 8 characters; ``$apr1$`` (``htpasswd -m``, htpasswd's
  default) is Apache's copy of it with its own magic string.
- ``$2a$``, ``$2b$``, ``$2y$`` (bcrypt, ``htpasswd -B``): verified by the optional
  ``bcrypt`` package; without it they are refused at load time.
- ``{PLAIN}``, ``{SHA}`` and ``{SSHA}``: the ``{scheme}data`` syntax of RFC 2307's
  userPassword as nginx documents it: the password itself, base64 of its SHA-1,
  and base64 of SHA-1(password + salt) followed by the salt.

Refused: traditional and extended DES crypt (only 8 characters of the password
count), yescrypt, scrypt, Argon2 and anything else nginx would hand to the C
library's ``crypt()``, whose formats differ between systems.

Passwords are bytes (what the client sent); stored hashes are text. Every
comparison of a computed hash with the stored one is constant time
(:func:`hmac.compare_digest`). The crypt schemes' cost is deliberate: :func:`is_slow`
tells the caller to run them off the reactor thread. Their cost also grows with the
password's length (SHA-crypt hashes the password once per byte of it), which the
caller bounds by the size it allows a request header.

Pure logic: standard library only, no Twisted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import re
import time
from collections.abc import Callable
from types import ModuleType
from typing import Protocol

__all__ = [
    "MAX_BCRYPT_COST",
    "MAX_ROUNDS",
    "UnsupportedHash",
    "check_hash",
    "is_slow",
    "verify_password",
]

#: The most SHA-crypt rounds an entry may ask for. Verification runs on every request
#: that presents a password, so rounds are a cost any client can make the server pay:
#: at about half a microsecond a round here, this is half a second a guess. It still
#: admits the larger settings in use (passlib's default for $6$ is 656000).
MAX_ROUNDS = 1_000_000
#: The highest bcrypt cost an entry may have (htpasswd -B's own limit).
MAX_BCRYPT_COST = 17

# What a refusal tells the administrator to do: both make a hash verified here, and
# both tools are where htpasswd files are made.
_INSTEAD = "make the entry with htpasswd -B (bcrypt) or openssl passwd -6"

_BCRYPT_MISSING = "bcrypt hashes need the bcrypt package (pip install 'twistwsgi[bcrypt]')"

# The crypt schemes' own base64 alphabet: not RFC 4648's, and read least
# significant bits first.
_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CRYPT_TEXT = re.compile(r"[./0-9A-Za-z]*")

# The order in which each scheme writes its digest's bytes, three at a time (the
# first of three the most significant); the last group may be shorter. From the
# schemes' specifications, which spread the bytes so that no output character
# depends on a single one.
_MD5_ORDER = (0, 6, 12, 1, 7, 13, 2, 8, 14, 3, 9, 15, 4, 10, 5, 11)
_SHA256_ORDER = (
    *(0, 10, 20, 21, 1, 11, 12, 22, 2, 3, 13, 23, 24, 4, 14),
    *(15, 25, 5, 6, 16, 26, 27, 7, 17, 18, 28, 8, 9, 19, 29, 31, 30),
)
_SHA512_ORDER = (
    *(0, 21, 42, 22, 43, 1, 44, 2, 23, 3, 24, 45, 25, 46, 4, 47, 5, 26, 6, 27, 48),
    *(28, 49, 7, 50, 8, 29, 9, 30, 51, 31, 52, 10, 53, 11, 32, 12, 33, 54, 34, 55, 13),
    *(56, 14, 35, 15, 36, 57, 37, 58, 16, 59, 17, 38, 18, 39, 60, 40, 61, 19, 62, 20, 41),
    63,
)

# Names for the modular crypt formats people are likely to paste, so that the
# refusal says what the entry is.
_KNOWN_REFUSED = {
    "y": "yescrypt ($y$)",
    "gy": "gost-yescrypt ($gy$)",
    "7": "scrypt ($7$)",
    "argon2i": "Argon2 ($argon2i$)",
    "argon2d": "Argon2 ($argon2d$)",
    "argon2id": "Argon2 ($argon2id$)",
    "2": "the first bcrypt ($2$)",
    "2x": "bcrypt marked as made by a buggy implementation ($2x$)",
    "3": "the NT hash ($3$)",
    "md5": "Sun MD5 crypt ($md5$)",
    "sha1": "NetBSD SHA-1 crypt ($sha1$)",
}
# (Sun's MD5 crypt writes its rounds after a comma: "$md5,rounds=N$".)
_SCHEME_ID = re.compile(r"\$([0-9A-Za-z-]{1,20})[$,]")
_BRACED_SCHEME = re.compile(r"\{([0-9A-Za-z.-]{1,20})\}")
_BCRYPT = re.compile(r"\$2[aby]\$([0-9]{2})\$[./0-9A-Za-z]{53}")


class UnsupportedHash(ValueError):  # noqa: N818 (the name the caller codes against)
    """A stored password hash in a format this module refuses to verify.

    The message names the format and says what to make the entry with instead.
    """


class _Hash(Protocol):
    """What the round loops need of a :mod:`hashlib` object."""

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


_HashNew = Callable[[bytes], _Hash]
_Verifier = Callable[[bytes], bool]


def check_hash(stored: str) -> None:
    """Refuse a stored hash that :func:`verify_password` cannot check.

    Called when the user file is loaded, so that a typo, or an entry in a format
    not supported here, is a start-up error rather than a user who cannot log in.

    Raises:
        UnsupportedHash: the format is not supported (or bcrypt's package is absent,
            or an SHA-crypt entry asks for more than :data:`MAX_ROUNDS` rounds).
        ValueError: the entry is in a supported format but malformed.
    """
    _verifier(stored)


def is_slow(stored: str) -> bool:
    """Whether verifying against `stored` costs enough to run off the reactor thread.

    The crypt schemes (``$apr1$``, ``$1$``, ``$5$``, ``$6$``, bcrypt) are slow by
    design; ``{PLAIN}``, ``{SHA}`` and ``{SSHA}`` take microseconds. A format not
    known here counts as slow, the safe side.
    """
    return not stored.startswith(("{PLAIN}", "{SHA}", "{SSHA}"))


def verify_password(password: bytes, stored: str) -> bool:
    """Whether `password` matches the `stored` hash, compared in constant time.

    Never raises for an entry :func:`check_hash` accepts; for one it refuses, raises
    what it raises.
    """
    return _verifier(stored)(password)


def _verifier(stored: str) -> _Verifier:
    """Parse `stored` into a function of the password, or raise check_hash's errors."""
    if stored.startswith("{PLAIN}"):
        return _plain_verifier(stored.removeprefix("{PLAIN}"))
    if stored.startswith("{SHA}"):
        return _sha_verifier(stored.removeprefix("{SHA}"))
    if stored.startswith("{SSHA}"):
        return _ssha_verifier(stored.removeprefix("{SSHA}"))
    if stored.startswith(("$apr1$", "$1$")):
        return _md5_crypt_verifier(stored)
    if stored.startswith(("$5$", "$6$")):
        return _sha_crypt_verifier(stored)
    if stored.startswith(("$2a$", "$2b$", "$2y$")):
        return _bcrypt_verifier(stored)
    raise _refusal(stored)


def _refusal(stored: str) -> UnsupportedHash:
    """The error for a format not verified here, naming it (never quoting the hash)."""
    if not stored:
        return UnsupportedHash(f"an empty password hash is not supported: {_INSTEAD}")
    if len(stored) == 13 and _CRYPT_TEXT.fullmatch(stored):
        return UnsupportedHash(
            f"traditional DES crypt is not supported (only 8 characters count): {_INSTEAD}"
        )
    if len(stored) == 20 and stored[0] == "_" and _CRYPT_TEXT.fullmatch(stored, 1):
        return UnsupportedHash(f"extended DES crypt (_) is not supported: {_INSTEAD}")
    if scheme := _SCHEME_ID.match(stored):
        name = _KNOWN_REFUSED.get(scheme[1], f"${scheme[1]}$ hashes")
        return UnsupportedHash(f"{name} is not supported: {_INSTEAD}")
    if scheme := _BRACED_SCHEME.match(stored):
        return UnsupportedHash(
            f"{{{scheme[1]}}} is not supported (nginx knows {{PLAIN}}, {{SHA}} and"
            f" {{SSHA}}): {_INSTEAD}"
        )
    return UnsupportedHash(f"unrecognised password hash format: {_INSTEAD}")


# --- {PLAIN}, {SHA}, {SSHA} -------------------------------------------------------


def _plain_verifier(text: str) -> _Verifier:
    try:
        # surrogateescape: a file decoded with it gives back its bytes as they were.
        secret = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ValueError("a {PLAIN} password that is not valid text") from None
    # Compare digests rather than the passwords themselves: compare_digest's time
    # still depends on the lengths, and the stored password's should not show.
    expected = hashlib.sha256(secret).digest()
    return lambda password: hmac.compare_digest(hashlib.sha256(password).digest(), expected)


def _decode_base64(scheme: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"a {scheme} entry that is not valid base64") from None


def _sha_verifier(text: str) -> _Verifier:
    expected = _decode_base64("{SHA}", text)
    if len(expected) != 20:
        raise ValueError(f"a {{SHA}} entry of {len(expected)} bytes, not SHA-1's 20")
    return lambda password: hmac.compare_digest(hashlib.sha1(password).digest(), expected)


def _ssha_verifier(text: str) -> _Verifier:
    decoded = _decode_base64("{SSHA}", text)
    if len(decoded) < 20:
        raise ValueError(f"a {{SSHA}} entry of {len(decoded)} bytes, shorter than SHA-1's 20")
    expected, salt = decoded[:20], decoded[20:]
    if not salt:
        # Most likely a {SHA} hash under the wrong name; say so rather than accept it.
        raise ValueError("an {SSHA} entry without a salt (for an unsalted SHA-1 write {SHA})")
    return lambda password: hmac.compare_digest(hashlib.sha1(password + salt).digest(), expected)


# --- the crypt schemes ------------------------------------------------------------


def _crypt_base64(digest: bytes, order: tuple[int, ...]) -> str:
    """Encode `digest` the way the crypt schemes do, its bytes taken in `order`."""
    characters = []
    for start in range(0, len(order), 3):
        group = order[start : start + 3]
        value = 0
        for index in group:
            value = value << 8 | digest[index]
        # n bytes need n + 1 characters; the lowest six bits come first.
        for _ in range(len(group) + 1):
            characters.append(_CRYPT_ALPHABET[value & 0x3F])
            value >>= 6
    return "".join(characters)


def _check_crypt_text(scheme: str, text: str, order: tuple[int, ...]) -> None:
    """Refuse a hash part that no digest encodes to (wrong length or characters)."""
    length = len(order) // 3 * 4 + (len(order) % 3 + 1 if len(order) % 3 else 0)
    if len(text) != length or not _CRYPT_TEXT.fullmatch(text):
        raise ValueError(f"a {scheme} entry whose hash is not {length} characters of [./0-9A-Za-z]")
    # The last character carries only the last group's leftover bits: a higher value
    # there is a typo no password can match.
    # (n bytes in n + 1 characters leave 2n bits in the last one; a full group, six.)
    leftover_bits = 2 * (len(order) % 3) or 6
    if _CRYPT_ALPHABET.index(text[-1]) >= 1 << leftover_bits:
        raise ValueError(f"a {scheme} entry whose hash's last character is impossible")


def _salt_bytes(scheme: str, salt: str, most: int) -> bytes:
    if len(salt) > most:
        raise ValueError(f"a {scheme} entry with a salt longer than {most} characters")
    # Tools draw salts from [./0-9A-Za-z]; any printable ASCII is allowed by the
    # specifications, but a space or control character is a damaged line.
    if not all(" " < character <= "~" for character in salt):
        raise ValueError(f"a {scheme} entry whose salt is not printable ASCII")
    return salt.encode("ascii")


def _repeat_to(block: bytes, length: int) -> bytes:
    """`block` repeated and cut to `length` bytes.

    The specifications say it as "for each block of 16, 32 or 64 bytes, then the
    remaining bytes".
    """
    return (block * (length // len(block) + 1))[:length]


def _stretch(new: _HashNew, digest: bytes, p: bytes, s: bytes, rounds: int) -> bytes:
    """The rounds that SHA-crypt and MD5-crypt share, from `digest`.

    Round i hashes (p if i is odd, else the digest), s unless 3 divides i, p unless
    7 divides i, then (the digest if i is odd, else p).

    The digest always sits at one end, and what goes with it depends only on i mod 42
    (2 x 3 x 7), so those 42 strings (six distinct ones) are joined once here and the
    loop is one concatenation and one hash a round.
    """
    after_digest = []  # even rounds: digest + this
    before_digest = []  # odd rounds: this + digest
    for i in range(0, 42, 2):
        after_digest.append((s if i % 3 else b"") + (p if i % 7 else b"") + p)
        odd = i + 1
        before_digest.append(p + (s if odd % 3 else b"") + (p if odd % 7 else b""))
    pairs = list(zip(after_digest, before_digest, strict=True))
    cycles, rest = divmod(rounds, 42)
    for cycle in range(cycles):
        for after, before in pairs:
            digest = new(digest + after).digest()
            digest = new(before + digest).digest()
        if cycle % 2:
            # A Python loop holds the interpreter lock: given up (in a system call,
            # so the thread waiting for it takes it) every 84 rounds, tens of
            # microseconds, the reactor gets it at once rather than after the 5 ms
            # switch interval at each of its own system calls. Measured under a
            # flood of $6$ guesses: a public request 0.8 ms instead of 216 ms.
            time.sleep(0)
    for i in range(rest):
        if i % 2:
            digest = new(before_digest[i // 2] + digest).digest()
        else:
            digest = new(digest + after_digest[i // 2]).digest()
    return digest


def _md5_crypt(password: bytes, magic: bytes, salt: bytes) -> str:
    """The hash part of MD5-crypt (`magic` b"$1$") or Apache's copy (b"$apr1$")."""
    alternate = hashlib.md5(password + salt + password).digest()
    context = hashlib.md5(password + magic + salt)
    context.update(_repeat_to(alternate, len(password)))
    # Per bit of the password's length, lowest first: a zero byte for a one and the
    # password's first byte for a zero (the original code's quirk, kept by every copy).
    length = len(password)
    while length:
        context.update(b"\0" if length & 1 else password[:1])
        length >>= 1
    digest = _stretch(hashlib.md5, context.digest(), password, salt, 1000)
    return _crypt_base64(digest, _MD5_ORDER)


def _sha_crypt(
    new: _HashNew, order: tuple[int, ...], password: bytes, salt: bytes, rounds: int
) -> str:
    """The hash part of SHA-crypt, steps 1 to 22 of Drepper's specification."""
    alternate = new(password + salt + password).digest()
    context = new(password + salt)
    context.update(_repeat_to(alternate, len(password)))
    # Per bit of the password's length, lowest first: the alternate digest for a one,
    # the password for a zero.
    length = len(password)
    while length:
        context.update(alternate if length & 1 else password)
        length >>= 1
    digest = context.digest()
    # The password, hashed as many times as it has bytes; fed in pieces so that a long
    # password does not become one string of its length squared.
    password_context = new(b"")
    for _ in range(len(password)):
        password_context.update(password)
    p = _repeat_to(password_context.digest(), len(password))
    s = _repeat_to(new(salt * (16 + digest[0])).digest(), len(salt))
    return _crypt_base64(_stretch(new, digest, p, s, rounds), order)


def _crypt_verifier(
    magic: str,
    parts: list[str],
    most_salt: int,
    order: tuple[int, ...],
    compute: Callable[[bytes, bytes], str],
) -> _Verifier:
    """Check an entry's ``salt$hash`` ``parts``; the verifier comparing ``compute``'s text."""
    salt_text, expected_text = parts
    salt = _salt_bytes(magic, salt_text, most_salt)
    _check_crypt_text(magic, expected_text, order)
    expected = expected_text.encode("ascii")
    return lambda password: hmac.compare_digest(compute(password, salt).encode("ascii"), expected)


def _md5_crypt_verifier(stored: str) -> _Verifier:
    magic = "$apr1$" if stored.startswith("$apr1$") else "$1$"
    parts = stored.removeprefix(magic).split("$")
    if len(parts) != 2:
        raise ValueError(f"a {magic} entry not of the form {magic}salt$hash")
    magic_bytes = magic.encode("ascii")
    return _crypt_verifier(
        magic, parts, 8, _MD5_ORDER, lambda password, salt: _md5_crypt(password, magic_bytes, salt)
    )


def _sha_crypt_verifier(stored: str) -> _Verifier:
    magic = stored[:3]
    new, order = (
        (hashlib.sha256, _SHA256_ORDER) if magic == "$5$" else (hashlib.sha512, _SHA512_ORDER)
    )
    parts = stored.removeprefix(magic).split("$")
    rounds = 5000
    if parts[0].startswith("rounds="):
        digits = parts.pop(0).removeprefix("rounds=")
        if not digits.isdigit() or not digits.isascii():
            raise ValueError(f"a {magic} entry whose rounds= is not a number")
        digits = digits.lstrip("0") or "0"
        # Clamped as the specification says; a number too long to be below the
        # ceiling is the ceiling (and int() of thousands of digits is refused anyway).
        rounds = 999_999_999 if len(digits) > 9 else max(1000, int(digits))
        if rounds > MAX_ROUNDS:
            raise UnsupportedHash(
                f"{magic} with {rounds} rounds is refused (every login attempt would pay"
                f" for them): make the entry with at most rounds={MAX_ROUNDS}"
            )
    if len(parts) != 2:
        raise ValueError(f"a {magic} entry not of the form {magic}[rounds=N$]salt$hash")
    return _crypt_verifier(
        magic,
        parts,
        16,
        order,
        lambda password, salt: _sha_crypt(new, order, password, salt, rounds),
    )


# --- bcrypt -----------------------------------------------------------------------


def _bcrypt_module() -> ModuleType:
    # Imported at each use rather than once: the package is optional, and whether it
    # is there is a question about this process when the file is loaded.
    try:
        return importlib.import_module("bcrypt")
    except ImportError:
        raise UnsupportedHash(_BCRYPT_MISSING) from None


def _bcrypt_verifier(stored: str) -> _Verifier:
    match = _BCRYPT.fullmatch(stored)
    if match is None:
        raise ValueError(f"a {stored[:4]} entry not of the form {stored[:4]}NN$ and 53 characters")
    if not 4 <= int(match[1]) <= MAX_BCRYPT_COST:
        # Each step doubles the time of a check any client can ask for: cost 17 is
        # seconds a guess, 31 a day and a half. htpasswd -B takes up to 17 too.
        raise ValueError(f"a {stored[:4]} entry whose cost is not between 04 and {MAX_BCRYPT_COST}")
    bcrypt = _bcrypt_module()
    # $2y$ is PHP's and Apache's name for what OpenBSD calls $2b$ (the same algorithm);
    # not every release of the bcrypt package accepts $2y$, all accept $2b$.
    hashed = ("$2b$" + stored[4:] if stored.startswith("$2y$") else stored).encode("ascii")

    def verify(password: bytes) -> bool:
        # No tool makes a hash of a password with a zero byte (C strings end there),
        # and the package refuses one: it cannot match.
        if b"\0" in password:
            return False
        # bcrypt reads 72 bytes of the password at most; some releases of the package
        # raise on more instead of ignoring them, so cut here (the same hash either way).
        try:
            return bool(bcrypt.checkpw(password[:72], hashed))
        except ValueError:
            return False

    return verify
