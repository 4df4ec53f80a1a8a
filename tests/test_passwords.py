"""The password checks for HTTP Basic authentication's user file
(``twistwsgi.passwords``): known answers from independent implementations, the
refusals and their messages, and properties against the standard library and, where
Python still has it, the C library's ``crypt()``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twistwsgi.passwords import (
    MAX_ROUNDS,
    UnsupportedHash,
    check_hash,
    is_slow,
    verify_password,
)

# Python's crypt module (glibc/libxcrypt's crypt()) is a second, independent
# implementation of $1$, $5$ and $6$; deprecated in 3.11, gone in 3.13.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as libc_crypt
    except ImportError:
        libc_crypt = None  # type: ignore[assignment]

needs_libc_crypt = pytest.mark.skipif(
    libc_crypt is None, reason="Python's crypt module is absent (removed in 3.13)"
)

# --- known answers ------------------------------------------------------------------
#
# Made with OpenSSL 3.0 on the development machine, the password fed on standard
# input (so any bytes can be in it):
#     printf '%s\n' "$password" | openssl passwd -apr1 -salt "$salt" -stdin
# with -apr1, -1, -5 or -6 as the scheme says; for -5/-6 a salt of "rounds=N$salt"
# gives the rounds= form. Each of the $1$/$5$/$6$ ones whose password is UTF-8 also
# came out the same from glibc's crypt() (Python 3.11's crypt module). Constants, so
# that the tests need neither tool.
OPENSSL_VECTORS = [
    (b"password", "$apr1$rOmHtXm1$PejhRgUy7tR7tnyqoBwZp."),
    (b"", "$apr1$abc$BfqKdn9xFDWJPa3kcp/PH0"),
    (b"x", "$apr1$$jYtXyIcDHukcQfHjblNhq/"),
    ("päss wörd".encode(), "$apr1$8charsal$NzAfmfr5rKgJD9Mfq1aBC."),
    (b"\xff\xfelatin-1 \xe9", "$apr1$Z$41rp4.r4hrawSgf/UffSf/"),
    (b"0123456789abcdefg", "$apr1$./09AZaz$9FOE7xUrsPyq/miaWv6C20"),
    (b"L" * 65, "$apr1$long$1ar5g22uRyF5W6T/1.cJw1"),
    (bytes(range(33, 127)) + b"!" * 6, "$apr1$longer$FJcML.JekJOUsV.m1yuMz."),
    (b"password", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"),
    (b"", "$1$s$iXWZU0LDEJ7Jjmms7KFsH0"),
    ("pässwörd".encode(), "$1$$G9xLeipIGv89GurZHGiz00"),
    (b"a" * 70, "$1$abcd$OHSDC0.yIuUUDksf/Dhnr1"),
    ("grüße ☃".encode(), "$5$0123456789abcdef$fPZgMT9U94kfRgZL/CBmULDkI.IHR1miTGf1ndGvJW7"),
    (b"\x80\x81\xfe\xff", "$5$rounds=1000$short$164I./DttBvOOwxyjL7NrqVLNRv7Co8ck8qb98PR.b."),
    (
        b"s" * 33,
        "$5$rounds=12345$abcdefgh$ahaEbZj.3nYlTpVtEe23BUi9Zer/L7AqwHbQljAPy06",
    ),
    (b"0123456789" * 7, "$5$mid.salt/$hzkp2PMqhNPh2/eFe/F.K9iKyMIn9aiuqidbNcbV4J9"),
    (
        "grüße ☃".encode(),
        "$6$0123456789abcdef$stBQSP5pOrwKLEaRtwnpMFl8eB9Vy2jsfo546551ktSEVt0.XRVClTOlP4eQs2"
        "Ce67/R.I0hMv9NpCPWkE3z9.",
    ),
    (
        b"p",
        "$6$rounds=1000$r1000$whM.QcePo1qQGkfuu79dOg8iEeZIQJBri.cWtayxgMHeUv4UT85HnVjCCWZkDK"
        "d5/KSNKuq5OgLxq8ovbm.Li1",
    ),
    (
        b"\x7f\x01\xc3(",
        "$6$rounds=7531$odd/rounds$uYL3deM2ZOfaLZv1ne1fC4UtMhqGUn8DFwLGofuVeVhEdz6COHr2mjJF"
        "ux8DsIJZOb6m9id2b/kDFrM6OG2RH/",
    ),
    (
        b"q" * 65,
        "$6$x.y$HIgPtkrofphq90fP4RnMtwCT1cAfAKQoXgwzn97WhILDAOJoy2EeIX/bfMdSxe7XGyOFMJIoc/FmG4"
        "R4nJ/u4.",
    ),
    (
        b"Z" * 129,
        "$6$9876543210$5Em7fRGT2c/mtg2eKPpOA0gBCoMLOsFUjmQglS5XwLqdzrvZO5fQZeRfOw7cz4VZ6DwKQy"
        "iw4UZe2eYjt6pQ4/",
    ),
]

# OpenSSL refuses an empty password for -5/-6, so these two are glibc's:
#     crypt.crypt("", "$5$a"), crypt.crypt("", "$6$Q")   (Python 3.11, libxcrypt)
LIBC_VECTORS = [
    (b"", "$5$a$CZ9Csdk0HaS3TQcxgDHTwM2gwOEDCViPn83i6BpFdH."),
    (
        b"",
        "$6$Q$7iVfdiIILY3LXCjpmQhuO7r/SiSoPpNoWurcru9kyfUWIVyN659urbOTxX3VllkSQZTNzX7p/aRXHcU1"
        "pNmcu/",
    ),
]

# The test vectors of Drepper's "Unix crypt using SHA-256 and SHA-512"
# (https://www.akkadia.org/drepper/SHA-crypt.txt), as the hashes crypt() returns:
# salts longer than 16 characters cut, rounds below 1000 raised to 1000. Each also
# came out the same from `openssl passwd -5/-6 -salt 'rounds=N$salt'` here.
DREPPER_VECTORS = [
    (b"Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    (
        b"Hello world!",
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
    ),
    (
        b"This is just a test",
        "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5",
    ),
    (
        b"a very much longer text to encrypt.  This one even stretches over morethan one line.",
        "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1",
    ),
    (
        b"we have a short salt string but not a short password",
        "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/",
    ),
    (
        b"a short string",
        "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD",
    ),
    (
        b"the minimum number is still observed",
        "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC",
    ),
    (
        b"Hello world!",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYE"
        "dFCoEOfaS35inz1",
    ),
    (
        b"Hello world!",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0"
        "Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    (
        b"This is just a test",
        "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxU"
        "hx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
    ),
    (
        b"a very much longer text to encrypt.  This one even stretches over morethan one line.",
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmL"
        "s66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ),
    (
        b"we have a short salt string but not a short password",
        "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUe"
        "OxFmtlcGZelFl5CxtgfiAc0",
    ),
    (
        b"a short string",
        "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycU"
        "LevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1",
    ),
    (
        b"the minimum number is still observed",
        "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaT"
        "fF4ZEQpyUNGc0dqbpBYYBaHHrsX.",
    ),
]

# {SHA} is base64(SHA-1(password)), {SSHA} base64(SHA-1(password + salt) + salt),
# made with OpenSSL's digest and coreutils' base64:
#     printf "$password" | openssl dgst -sha1 -binary | base64
#     { printf "$password$salt" | openssl dgst -sha1 -binary; printf "$salt"; } | base64
RFC2307_VECTORS = [
    (b"password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="),
    ("pässwörd".encode(), "{SHA}9Rfd8dMqES/xrVXGbRsSyzjn6Pc="),
    (b"", "{SHA}2jmj7l5rSw0yVb/vlWAYkK/YBwk="),
    (b"\xff", "{SHA}heUyceFABvAmWSHQLU1zbNxYCws="),
    (b"secret", "{SSHA}dj2lH1ocucmj5OQsjP6mQrVx6FhOYUNs"),  # salt "NaCl"
    (b"p\xc3\xa4ss\xffw", "{SSHA}0Y9l0J+hC4RP6NJh53px0NEgiZ0BAv/+"),  # salt 01 02 ff fe
    (b"", "{SSHA}LCq6zkvYuxn2cRPaFG27jMz4SRVzYWx0c2FsdA=="),  # salt "saltsalt"
    (b"plain text", "{PLAIN}plain text"),
    ("pässwort".encode(), "{PLAIN}pässwort"),
    (b"", "{PLAIN}"),
]

ALL_VECTORS = OPENSSL_VECTORS + LIBC_VECTORS + DREPPER_VECTORS + RFC2307_VECTORS

CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def vector_id(vector: tuple[bytes, str]) -> str:
    password, stored = vector
    scheme = stored[: stored.index("}") + 1] if stored.startswith("{") else stored[:6]
    return f"{scheme}-{len(password)}B"


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=vector_id)
def test_known_answer(vector: tuple[bytes, str]) -> None:
    """The right password matches; another password, and the right one with one byte
    changed, added or removed, do not.
    """
    password, stored = vector
    check_hash(stored)
    assert verify_password(password, stored)
    assert not verify_password(password + b"!", stored)
    assert not verify_password(b"wrong" + password, stored)
    if password:
        assert not verify_password(password[:-1], stored)
        assert not verify_password(bytes([password[0] ^ 1]) + password[1:], stored)
        assert not verify_password(password[:-1] + bytes([password[-1] ^ 0x80]), stored)


def change_one_character(stored: str) -> str:
    """`stored` with one character of its hash part changed (and still well-formed)."""
    position = len(stored) - 10
    if stored.startswith("{PLAIN}"):
        return stored + "x"
    if stored.startswith(("{SHA}", "{SSHA}")):
        decoded = bytearray(base64.b64decode(stored.split("}", 1)[1]))
        decoded[3] ^= 1
        return stored.split("}", 1)[0] + "}" + base64.b64encode(decoded).decode()
    character = CRYPT_ALPHABET[(CRYPT_ALPHABET.index(stored[position]) + 1) % 64]
    return stored[:position] + character + stored[position + 1 :]


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=vector_id)
def test_a_changed_hash_does_not_match(vector: tuple[bytes, str]) -> None:
    """One character of the stored hash changed: still a well-formed entry, and the
    password no longer matches it.
    """
    password, stored = vector
    changed = change_one_character(stored)
    check_hash(changed)
    assert not verify_password(password, changed)


def test_rounds_below_the_minimum_count_as_the_minimum() -> None:
    """rounds= under 1000 is 1000, and leading zeros change nothing (the specification's
    clamp); rounds=5000 written out is the default.
    """
    password, stored = DREPPER_VECTORS[6]
    hash_part = stored.rsplit("$", 1)[1]
    for rounds in ("10", "0", "999", "0001000"):
        assert verify_password(password, f"$5$rounds={rounds}$roundstoolow${hash_part}")
    assert not verify_password(password, f"$5$rounds=1001$roundstoolow${hash_part}")
    assert verify_password(
        b"Hello world!", "$5$rounds=5000$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
    )


def test_every_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step of every check is hmac.compare_digest (a plain == would leak,
    through its time, how much of a guess was right).
    """
    calls: list[tuple[bytes | str, bytes | str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for password, stored in [*OPENSSL_VECTORS, *RFC2307_VECTORS]:
        calls.clear()
        assert verify_password(password, stored)
        assert len(calls) == 1, stored


# --- bcrypt ---------------------------------------------------------------------------


def test_bcrypt_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the bcrypt package a bcrypt entry is refused at load time, saying which
    package to install.
    """
    monkeypatch.setitem(sys.modules, "bcrypt", None)  # makes `import bcrypt` fail
    stored = "$2y$05$" + "a" * 53
    with pytest.raises(UnsupportedHash) as raised:
        check_hash(stored)
    assert str(raised.value) == (
        "bcrypt hashes need the bcrypt package (pip install 'twistwsgi[bcrypt]')"
    )
    assert is_slow(stored)


@pytest.fixture
def fake_bcrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[bytes, bytes]]]:
    """A stand-in bcrypt package that records what checkpw is given, so that what
    this module hands the package is tested where the package is not installed.
    """
    calls: list[tuple[bytes, bytes]] = []

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append((password, hashed))
        if password == b"raise":
            raise ValueError("Invalid salt")
        return password.startswith(b"right")

    module = types.ModuleType("bcrypt")
    module.checkpw = checkpw  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bcrypt", module)
    yield calls


def test_bcrypt_arguments(fake_bcrypt: list[tuple[bytes, bytes]]) -> None:
    """$2y$ goes to the package as $2b$ (the same algorithm), $2a$/$2b$ as they are;
    passwords are cut to bcrypt's 72 bytes; one with a zero byte, or one the package
    raises for, does not match.
    """
    body = "05$" + "abcdefghijklmnopqrstuv" + "A" * 31
    assert verify_password(b"right", "$2y$" + body)
    assert fake_bcrypt[-1] == (b"right", ("$2b$" + body).encode())
    for prefix in ("$2a$", "$2b$"):
        assert verify_password(b"right", prefix + body)
        assert fake_bcrypt[-1] == (b"right", (prefix + body).encode())
    assert verify_password(b"right" + b"x" * 100, "$2b$" + body)
    assert fake_bcrypt[-1][0] == b"right" + b"x" * 67
    assert not verify_password(b"wrong", "$2b$" + body)
    calls = len(fake_bcrypt)
    assert not verify_password(b"right\0", "$2b$" + body)
    assert len(fake_bcrypt) == calls
    assert not verify_password(b"raise", "$2b$" + body)


@pytest.mark.parametrize(
    "stored",
    [
        "$2b$5$" + "a" * 53,  # the cost is two digits
        "$2b$03$" + "a" * 53,  # below bcrypt's least cost
        "$2b$32$" + "a" * 53,
        "$2b$18$" + "a" * 53,  # above htpasswd's own limit: seconds a guess
        "$2b$05$" + "a" * 52,
        "$2b$05$" + "a" * 52 + "!",
        "$2y$05$",
    ],
)
def test_malformed_bcrypt(stored: str, fake_bcrypt: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ValueError) as raised:
        check_hash(stored)
    assert not isinstance(raised.value, UnsupportedHash)


def test_bcrypt_with_the_package() -> None:
    """With the real package: hashes it makes verify, under each of the three names."""
    bcrypt = pytest.importorskip("bcrypt", reason="the optional bcrypt package is absent")
    for password in (b"", b"password", "pässwörd".encode(), b"x" * 72, bytes(range(1, 100))):
        made = bcrypt.hashpw(password[:72], bcrypt.gensalt(rounds=4)).decode()
        for prefix in ("$2a$", "$2b$", "$2y$"):
            stored = prefix + made[4:]
            check_hash(stored)
            assert is_slow(stored)
            assert verify_password(password, stored)
            assert not verify_password(password + b"!" if len(password) < 72 else b"", stored)


# Made with libxcrypt's bcrypt (Python 3.11's crypt module): crypt.crypt(password,
# setting). The first is also in Openwall's crypt_blowfish tests (as $2a$); 80 and 72
# bytes give one hash, bcrypt reading no more than 72.
BCRYPT_VECTORS = [
    (b"U*U", "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"),
    ("pässwörd".encode(), "$2y$04$abcdefghijklmnopqrstuuyx2n0Zzopyr9QuYTMCfOJJOj526QVoC"),
    (b"x" * 80, "$2b$04$abcdefghijklmnopqrstuubzadhGtS2zEF.gu0yd0opP6cVzb.e0i"),
    (b"x" * 72, "$2b$04$abcdefghijklmnopqrstuubzadhGtS2zEF.gu0yd0opP6cVzb.e0i"),
]


@pytest.mark.parametrize("vector", BCRYPT_VECTORS, ids=vector_id)
def test_bcrypt_known_answer(vector: tuple[bytes, str]) -> None:
    """Entries in bcrypt (under each of its three names) checked by the real package."""
    pytest.importorskip("bcrypt", reason="the optional bcrypt package is absent")
    password, stored = vector
    for prefix in ("$2a$", "$2b$", "$2y$"):
        renamed = prefix + stored[4:]
        check_hash(renamed)
        assert verify_password(password, renamed)
        # Past 72 bytes, bcrypt reads no more: one byte less is the same password.
        assert verify_password(password[:-1], renamed) is (len(password) > 72)
        assert not verify_password(bytes([password[0] ^ 1]) + password[1:], renamed)
        assert not verify_password(password, change_one_character(renamed))


# --- refusals and malformed entries -----------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "named"),
    [
        ("abJnggxhB/yWI", "traditional DES crypt"),
        ("_J9..CCCCXBrJUJV154M", "extended DES crypt"),
        ("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7", "yescrypt"),
        ("$gy$j9T$salt$hashhashhash", "gost-yescrypt"),
        (
            "$7$CU..../....2xFS9TQZtR/fLnTOOMEz0O$QeUmBdEpzIXu/JgDCcrYfC6R0V4iY2R.wI/aKYkK/5C",
            "scrypt",
        ),
        ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "Argon2 ($argon2id$)"),
        ("$argon2i$v=19$m=4096,t=3,p=1$c2FsdA$aGFzaA", "Argon2 ($argon2i$)"),
        ("$2x$05$" + "a" * 53, "$2x$"),
        ("$2$05$" + "a" * 53, "$2$"),
        ("$3$$8846f7eaee8fb117ad06bdd830b7586c", "NT hash"),
        ("$md5,rounds=5000$GUBv0xjJ$$mSwgIswdjlTY0YxV7HBVm0", "Sun MD5"),
        ("$pbkdf2-sha256$29000$c2FsdA$aGFzaA", "$pbkdf2-sha256$"),
        ("{SHA256}XohImNooBHFR0OVvjcYpJ3NgPQ1qq73WKhHvch0VQtg=", "{SHA256}"),
        ("{CRYPT}$6$salt$hash", "{CRYPT}"),
        ("{MD5}X03MO1qnZdYdgyfeuILPmQ==", "{MD5}"),
        ("", "empty"),
        ("hunter2", "unrecognised"),
        ("$", "unrecognised"),
        ("5f4dcc3b5aa765d61d8327deb882cf99", "unrecognised"),
    ],
)
def test_refused_formats(stored: str, named: str) -> None:
    """Each format not verified here is refused by name, with what to use instead,
    and without quoting the hash.
    """
    with pytest.raises(UnsupportedHash) as raised:
        check_hash(stored)
    message = str(raised.value)
    assert named in message
    assert message.endswith("make the entry with htpasswd -B (bcrypt) or openssl passwd -6")
    assert len(stored) < 8 or stored[-8:] not in message
    with pytest.raises(UnsupportedHash):
        verify_password(b"password", stored)


def test_yescrypt_message() -> None:
    with pytest.raises(UnsupportedHash, match=r"^yescrypt \(\$y\$\) is not supported: "):
        check_hash("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7")


def test_too_many_rounds_are_refused() -> None:
    """An SHA-crypt entry may ask for up to MAX_ROUNDS rounds; more is refused (each
    guess would cost seconds of a thread), saying the limit.
    """
    hash_part = DREPPER_VECTORS[0][1].rsplit("$", 1)[1]
    check_hash(f"$5$rounds={MAX_ROUNDS}$saltstring${hash_part}")
    for rounds in (MAX_ROUNDS + 1, 999_999_999, 10**40):
        with pytest.raises(UnsupportedHash, match=f"at most rounds={MAX_ROUNDS}$"):
            check_hash(f"$6$rounds={rounds}$salt${hash_part}")
    # The ceiling of the specification's clamp is what the message names.
    with pytest.raises(UnsupportedHash, match="999999999 rounds"):
        check_hash(f"$5$rounds={'9' * 5000}$salt${hash_part}")


SHA256_HASH = DREPPER_VECTORS[0][1].rsplit("$", 1)[1]
SHA512_HASH = DREPPER_VECTORS[7][1].rsplit("$", 1)[1]
MD5_HASH = OPENSSL_VECTORS[0][1].rsplit("$", 1)[1]


@pytest.mark.parametrize(
    "stored",
    [
        "$5$saltstring",  # no hash part
        "$5$saltstring$",
        "$5$",
        "$6$rounds=5000$salt",
        "$5$rounds=5000",
        f"$5$salt$extra${SHA256_HASH}",
        f"$5$rounds=abc$salt${SHA256_HASH}",
        f"$5$rounds=$salt${SHA256_HASH}",
        f"$5$rounds=-5$salt${SHA256_HASH}",
        f"$5$rounds=١٢٣٤$salt${SHA256_HASH}",  # digits, but not ASCII ones
        f"$5$0123456789abcdefg${SHA256_HASH}",  # a 17-character salt
        f"$5$sa lt${SHA256_HASH}",
        f"$5$salté${SHA256_HASH}",
        f"$6$salt${SHA256_HASH}",  # a SHA-256 hash under $6$
        f"$5$salt${SHA512_HASH}",
        f"$5$salt${SHA256_HASH[:-1]}",
        f"$5$salt${SHA256_HASH}\r",
        f"$5$salt${SHA256_HASH[:-1]}z",  # a last character no digest encodes to
        f"$6$salt${SHA512_HASH[:-1]}Z",
        f"$1$123456789${MD5_HASH}",  # a 9-character salt
        f"$apr1$salt${MD5_HASH[:-1]}",
        f"$apr1$salt${MD5_HASH[:-1]}e",
        f"$apr1$salt${MD5_HASH[:10]}-{MD5_HASH[11:]}",
        "$apr1$salt",
        "{SHA}not base64!",
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g",  # padding missing
        "{SHA}" + base64.b64encode(b"x" * 19).decode(),
        "{SHA}" + base64.b64encode(b"x" * 32).decode(),  # a SHA-256, not a SHA-1
        "{SSHA}dj2lH1ocucmj5OQsjP6mQrVx6Fh*YUNs",
        "{SHA}W6ph5Mm5Pz8Ggi ULbPgzG37mj9g=",  # base64 would be right without the space
        "{SSHA}dj2lH1ocucmj5OQsjP6mQrVx6FhOYUNs\r",
        "{SSHA}" + base64.b64encode(b"x" * 19).decode(),
        "{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",  # no salt: a {SHA} under the wrong name
        "{PLAIN}\ud800",
    ],
)
def test_malformed_entries(stored: str) -> None:
    """A known scheme's entry that cannot be right is a ValueError at load time (not
    an UnsupportedHash: the format is fine, the entry is not).
    """
    with pytest.raises(ValueError) as raised:
        check_hash(stored)
    assert type(raised.value) is ValueError
    assert str(raised.value)


@pytest.mark.parametrize(
    ("stored", "slow"),
    [
        ("{PLAIN}x", False),
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", False),
        ("{SSHA}dj2lH1ocucmj5OQsjP6mQrVx6FhOYUNs", False),
        (OPENSSL_VECTORS[0][1], True),
        (OPENSSL_VECTORS[8][1], True),
        (DREPPER_VECTORS[0][1], True),
        (DREPPER_VECTORS[7][1], True),
        ("$2y$05$" + "a" * 53, True),
        ("$2b$05$" + "a" * 53, True),
        ("{SHA256}x", True),  # unknown: the safe side
        ("$y$j9T$x$y", True),
    ],
)
def test_is_slow(stored: str, slow: bool) -> None:
    assert is_slow(stored) is slow


def test_plain_keeps_the_files_bytes() -> None:
    """A {PLAIN} password read from a file with surrogateescape matches the bytes
    that were in the file.
    """
    stored = b"{PLAIN}caf\xe9".decode("utf-8", "surrogateescape")
    assert verify_password(b"caf\xe9", stored)
    assert not verify_password("café".encode(), stored)


# --- properties -------------------------------------------------------------------------

FEW = settings(max_examples=30, deadline=None)


@FEW
@given(password=st.binary(max_size=200), other=st.binary(max_size=200))
def test_sha_entries_made_with_hashlib(password: bytes, other: bytes) -> None:
    """{SHA} made from hashlib: its password matches, any other does not."""
    stored = "{SHA}" + base64.b64encode(hashlib.sha1(password).digest()).decode()
    check_hash(stored)
    assert verify_password(password, stored)
    assert verify_password(other, stored) is (other == password)


@FEW
@given(
    password=st.binary(max_size=200),
    salt=st.binary(min_size=1, max_size=32),
    other=st.binary(max_size=200),
)
def test_ssha_entries_made_with_hashlib(password: bytes, salt: bytes, other: bytes) -> None:
    """{SSHA} made from hashlib, any salt: its password matches, any other does not."""
    digest = hashlib.sha1(password + salt).digest()
    stored = "{SSHA}" + base64.b64encode(digest + salt).decode()
    check_hash(stored)
    assert verify_password(password, stored)
    assert verify_password(other, stored) is (other == password)


@FEW
@given(password=st.binary(max_size=100), other=st.binary(max_size=100))
def test_plain_entries(password: bytes, other: bytes) -> None:
    stored = "{PLAIN}" + password.decode("utf-8", "surrogateescape")
    check_hash(stored)
    assert verify_password(password, stored)
    assert verify_password(other, stored) is (other == password)


# Text crypt() can take: Python hands it UTF-8, which cannot carry a zero byte.
crypt_passwords = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=80
)


def crypt_salts(most: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(CRYPT_ALPHABET), min_size=1, max_size=most)


def libc(password: str, setting: str) -> str:
    assert libc_crypt is not None
    made = libc_crypt.crypt(password, setting)
    assert made is not None and made.startswith("$"), made
    return made


def agrees_with_libc(password: str, setting: str, other: bytes) -> None:
    stored = libc(password, setting)
    check_hash(stored)
    assert verify_password(password.encode(), stored)
    assert verify_password(other, stored) is (other == password.encode())


@needs_libc_crypt
@FEW
@given(password=crypt_passwords, salt=crypt_salts(8), other=st.binary(max_size=20))
def test_md5_crypt_agrees_with_libc(password: str, salt: str, other: bytes) -> None:
    agrees_with_libc(password, f"$1${salt}", other)


@needs_libc_crypt
@pytest.mark.parametrize("scheme", ["$5$", "$6$"])
@FEW
@given(
    password=crypt_passwords,
    salt=crypt_salts(16),
    rounds=st.one_of(st.none(), st.integers(1000, 1100)),
    other=st.binary(max_size=20),
)
def test_sha_crypt_agrees_with_libc(
    scheme: str, password: str, salt: str, rounds: int | None, other: bytes
) -> None:
    prefix = "" if rounds is None else f"rounds={rounds}$"
    agrees_with_libc(password, f"{scheme}{prefix}{salt}", other)


WELL_FORMED: list[str] = [stored for _, stored in OPENSSL_VECTORS[::4] + RFC2307_VECTORS]


@FEW
@given(password=st.binary(max_size=300), pick=st.sampled_from(WELL_FORMED))
def test_never_raises_for_a_well_formed_entry(password: bytes, pick: str) -> None:
    """Any bytes a client sends, zero bytes and invalid UTF-8 included, get an answer."""
    assert isinstance(verify_password(password, pick), bool)


def test_a_crypt_check_gives_up_the_interpreter_lock_as_it_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MD5- and SHA-crypt are Python loops: without a pause the thread holds the
    interpreter for the whole switch interval at each of the reactor's system calls
    (a flood of guesses slowed every request a hundredfold). They pause every 84
    rounds.
    """
    import time

    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    # openssl passwd -6 -salt saltsalt 'open sesame'
    assert verify_password(
        b"open sesame",
        "$6$saltsalt$e/5XKibXPLqVcfjpD.ouauaJrAOL5V0uo80Lt7n7EbRdRiCx3HbQ90yjOHr.G0T."
        "mx79PEMRy8nmtr0qSYhQp1",
    )
    assert len(pauses) == 5000 // 84
    assert set(pauses) == {0}
