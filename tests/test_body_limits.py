"""Per-mount request-body limits (a mount's ``max_body``, nginx's
``client_max_body_size`` in a location): the routing lookup the protocol makes
from the head, and whole configurations served in memory, where the 413 is
decided from Content-Length before the body and from a chunked body's bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twistwsgi import cli
from twistwsgi.config import ConfigError
from twistwsgi.http.request import RequestHead
from twistwsgi.routing import HostTable, Mount, MountTable, Router, RoutingTable
from twistwsgi.service import ServerService, make_service
from twistwsgi.testing import parse_responses


def head(path: bytes, authority: bytes = b"a.example") -> RequestHead:
    return RequestHead(
        method=b"POST",
        target=path,
        path=path,
        decoded_path=path,
        query=b"",
        version=b"1.1",
        headers=[],
        authority=authority,
        content_length=10,
        chunked=False,
        scheme="http",
        peer=("192.0.2.1", 4000),
        local=None,
    )


def router(body_limits: bool = True) -> Router:
    mounts: MountTable[Any] = MountTable(
        [Mount(b"", "site"), Mount(b"/upload", "uploads", 50_000_000), Mount(b"/api", "api", 0)]
    )
    hosts = HostTable([(("a.example",), mounts)], None)
    return Router(RoutingTable(hosts, body_limits=body_limits))


@pytest.mark.parametrize(
    ("path", "authority", "limit"),
    [
        (b"/upload", b"a.example", 50_000_000),
        (b"/upload/avatar", b"A.Example:8080", 50_000_000),
        (b"//upload//x", b"a.example", 50_000_000),  # slashes merged, as routing does
        (b"/x/../upload/y", b"a.example", 50_000_000),  # dot segments, as routing does
        (b"/uploads", b"a.example", None),  # not below /upload: the server's limit
        (b"/api/v1", b"a.example", 0),
        (b"/upload", b"other.example", None),  # no such host
        (b"/../upload", b"a.example", None),  # above the root: a 404 anyway
    ],
)
def test_the_limit_is_the_routed_mounts(path: bytes, authority: bytes, limit: int | None) -> None:
    assert router().body_limit(head(path, authority)) == limit


def test_a_table_without_mount_limits_is_not_looked_up() -> None:
    assert router(body_limits=False).body_limit(head(b"/upload")) is None


SITE = """\
[server]
threads = 0
access_log = "off"
max_body = "1k"

[[host]]
names = ["a.example"]
[[host.mount]]
path = "/"
app = "tests.apps:echo"
[[host.mount]]
path = "/upload"
app = "tests.apps:echo"
max_body = "8k"
[[host.mount]]
path = "/small"
app = "tests.apps:echo"
max_body = 10
[[host.mount]]
path = "/free"
app = "tests.apps:echo"
max_body = 0
"""


def serve(tmp_path: Path, text: str = SITE) -> ServerService:
    path = tmp_path / "site.toml"
    path.write_text(text)
    service = make_service(
        cli.load_config({"config": str(path)}), reactor=MemoryReactorClock(), endpoints=[]
    )
    service.startService()
    return service


def post(service: ServerService, target: bytes, size: int, *, chunked: bool = False) -> int:
    """POST ``size`` bytes to ``target``; return the response status."""
    protocol = service.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 4000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    body = b"b" * size
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (size, body) if size else b"0\r\n\r\n"
    else:
        framing = b"Content-Length: %d\r\n" % size
    protocol.dataReceived(b"POST " + target + b" HTTP/1.1\r\nHost: a.example\r\n" + framing)
    protocol.dataReceived(b"\r\n" + body)
    [response] = parse_responses(transport.value())[-1:]
    return response.status


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("target", "size", "status"),
    [
        (b"/", 1024, 200),
        (b"/", 1025, 413),  # the server's limit
        (b"/upload/file", 8192, 200),  # larger under /upload
        (b"/upload/file", 8193, 413),
        (b"/small", 11, 413),  # smaller under /small
        (b"/free", 100_000, 200),  # none under /free
    ],
)
def test_each_mount_has_its_limit(
    tmp_path: Path, chunked: bool, target: bytes, size: int, status: int
) -> None:
    service = serve(tmp_path)
    assert post(service, target, size, chunked=chunked) == status
    service.stopService()


def test_a_413_from_the_head_reads_none_of_the_body(tmp_path: Path) -> None:
    """Decided from Content-Length: the answer goes out before any body byte."""
    service = serve(tmp_path)
    protocol = service.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 4000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"POST /small HTTP/1.1\r\nHost: a.example\r\nContent-Length: 11\r\n\r\n")
    [response] = parse_responses(transport.value())
    assert response.status == 413
    service.stopService()


def test_a_reload_changes_the_limits(tmp_path: Path) -> None:
    service = serve(tmp_path)
    assert post(service, b"/upload", 5000) == 200
    (tmp_path / "site.toml").write_text(SITE.replace('max_body = "8k"', 'max_body = "4k"'))
    assert service.reload(cli.load_config({"config": str(tmp_path / "site.toml")}))
    assert post(service, b"/upload", 5000) == 413
    service.stopService()


def test_a_static_mount_passing_misses_on_takes_its_partners_limit(tmp_path: Path) -> None:
    """A POST under a fallthrough static mount reaches the application behind it,
    so that application's limit applies there.
    """
    (tmp_path / "files").mkdir()
    text = SITE.replace(
        'path = "/upload"\napp = "tests.apps:echo"\nmax_body = "8k"\n',
        'path = "/upload"\napp = "tests.apps:echo"\nmax_body = "8k"\n'
        '[[host.mount]]\npath = "/upload"\nstatic = "files"\nfallthrough = true\n',
    )
    service = serve(tmp_path, text)
    assert post(service, b"/upload/new", 5000) == 200
    assert post(service, b"/upload/new", 9000) == 413
    service.stopService()


def test_a_proxy_mount_takes_a_limit_and_a_static_mount_refuses_one(tmp_path: Path) -> None:
    proxied = (
        SITE + '[[host.mount]]\npath = "/api"\nproxy = "http://127.0.0.1:9"\nmax_body = "1m"\n'
    )
    path = tmp_path / "site.toml"
    path.write_text(proxied)
    [host] = cli.load_config({"config": str(path)}).hosts
    assert [mount.options.get("max_body") for mount in host.mounts][-1] == 1024 * 1024
    (tmp_path / "files").mkdir()
    path.write_text(SITE + '[[host.mount]]\npath = "/s"\nstatic = "files"\nmax_body = "1m"\n')
    with pytest.raises(ConfigError, match="max_body"):
        cli.load_config({"config": str(path)})


@pytest.mark.parametrize("order", ["deepest first", "shallowest first"])
def test_a_chain_of_fallthrough_mounts_ends_at_the_applications_limit(
    tmp_path: Path, order: str
) -> None:
    """/a/b passes misses to /a, which passes them to the application at /: the
    limit is the application's whatever order the mounts are written in (it was
    the server's when /a/b came first).
    """
    for name in ("ab", "a"):
        (tmp_path / name).mkdir()
    deep = '[[host.mount]]\npath = "/a/b"\nstatic = "ab"\nfallthrough = true\n'
    shallow = '[[host.mount]]\npath = "/a"\nstatic = "a"\nfallthrough = true\n'
    statics = deep + shallow if order == "deepest first" else shallow + deep
    text = (
        '[server]\nthreads = 0\naccess_log = "off"\nmax_body = "1k"\n\n'
        '[[host]]\nnames = ["a.example"]\n'
        + statics
        + '[[host.mount]]\npath = "/"\napp = "tests.apps:echo"\nmax_body = "50m"\n'
    )
    service = serve(tmp_path, text)
    assert post(service, b"/a/b/x", 5000) == 200
    assert post(service, b"/a/x", 5000) == 200
    service.stopService()
