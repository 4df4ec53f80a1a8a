"""The documentation stays true: generated pages are current, examples run."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twistwsgi.reference import cli_reference, configuration_reference

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current() -> None:
    """docs/cli.md is exactly what the settings schema generates."""
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference(), (
        "run: python -m twistwsgi.reference"
    )


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is exactly what the settings schema generates."""
    assert (ROOT / "docs" / "configuration.md").read_text() == configuration_reference(), (
        "run: python -m twistwsgi.reference"
    )


def test_configuration_reference_example_is_valid(tmp_path: Path) -> None:
    """The example at the top of the configuration reference validates (with the
    static directory it names replaced by one that exists).
    """
    from twistwsgi.cli import load_config

    text = configuration_reference().split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "static").mkdir()
    path = tmp_path / "site.toml"
    path.write_text(text.replace("/srv/shop/static", str(tmp_path / "static")))
    config = load_config({"config": str(path)})
    assert [host.names for host in config.hosts] == [
        ("example.com", "www.example.com"),
        ("*.example.org",),
    ]


def test_library_example_runs_two_servers_in_one_reactor() -> None:
    """The library example builds a MultiService that listens with both the WSGI
    server and the echo server on one reactor, and stops cleanly.
    """
    path = ROOT / "docs" / "examples" / "wsgi_and_echo.py"
    spec = importlib.util.spec_from_file_location("wsgi_and_echo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reactor = MemoryReactorClock()
    top = module.build(reactor)
    top.startService()
    ports = sorted(port for port, _factory, _backlog, _interface in reactor.tcpServers)
    assert ports == [8080, 8081]
    echo_factory = next(f for port, f, _, _ in reactor.tcpServers if port == 8081)
    protocol = echo_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"ping\n")
    assert transport.value() == b"ping\n"
    top.stopService()


def test_readme_starts_with_the_two_commands() -> None:
    """The README shows make run and make test before anything else."""
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def prose(page: Path) -> str:
    """``page`` without its code blocks."""
    return re.sub(r"^(```|~~~).*?^\1", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)


def heading_anchors(page: Path) -> set[str]:
    """The anchors a Markdown renderer gives ``page``'s headings (GitHub's rule:
    lower case, punctuation dropped, spaces made dashes; a repeated heading's
    anchor numbered, ``-1`` for the second).
    """
    text = prose(page)
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*$", text, flags=re.MULTILINE):
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(f"{anchor}-{count}" if count else anchor)
    return anchors


def test_links_between_pages_lead_somewhere() -> None:
    """Every link from one page to another (or to a section) names a page that
    exists and a heading it has: a section renamed must not leave links to nowhere.
    """
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)\s#:]*)(?:#([^)\s]+))?\)", prose(page)):
            if not target and not anchor:
                continue
            linked = (page.parent / target).resolve() if target else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert not broken
    assert "how-requests-are-routed" in heading_anchors(ROOT / "docs" / "configuration.md")
    assert "50-connections-1" in heading_anchors(ROOT / "docs" / "benchmarks.md")


def test_annotated_example_config_validates(tmp_path: Path) -> None:
    """deploy/site.example.toml is valid once its directories exist."""
    from twistwsgi.cli import load_config

    text = (ROOT / "deploy" / "site.example.toml").read_text()
    for directory in (
        "/srv/shop/static",
        "/srv/shop/media",
        "/srv/shop/private",
        "/srv/org/public",
    ):
        local = tmp_path / directory.strip("/").replace("/", "_")
        local.mkdir()
        text = text.replace(directory, str(local))
    from tests.test_sockets import write_self_signed_certificate
    from twistwsgi.host_certificates import host_certificates

    key, cert = write_self_signed_certificate(tmp_path, names=("*.example.org",))
    text = text.replace("/etc/letsencrypt/live/example.org/fullchain.pem", str(cert))
    text = text.replace("/etc/letsencrypt/live/example.org/privkey.pem", str(key))
    (tmp_path / "errors").mkdir()
    for page in ("404.html", "50x.html"):
        (tmp_path / "errors" / page).write_text("<h1>Sorry</h1>\n")
    path = tmp_path / "site.toml"
    path.write_text(text)
    config = load_config({"config": str(path)})
    assert len(config.hosts) == 3
    assert str(config.hosts[1].mounts[0].target) == "301 https://example.com$request_uri"
    assert [status for status, _ in config.hosts[0].error_pages] == [404, 500, 503, 504]
    assert host_certificates(config.hosts) is not None
    assert config.gzip and config.hosts[0].https_redirect == 443
    shop = {mount.path: mount.options for mount in config.hosts[0].mounts}
    assert shop["/healthz"]["https_redirect"] is False
    assert shop["/admin"]["allow"] == ("192.168.10.0/24",)
    assert shop["/accounts/login"]["rate_limit"] == pytest.approx(10 / 60)
    org = {mount.path: mount.options for mount in config.hosts[2].mounts}
    assert org["/api"]["conn_limit"] == 10
    assert config.http.max_body == 20 * 1024 * 1024
    assert config.trusted_proxies == ("10.0.0.0/8",)


def test_configuration_snippets_use_only_known_keys() -> None:
    """Each ```toml block of docs/ is TOML, and its [server], [[host]] and
    [[host.mount]] keys (or a bare mount's) exist: a renamed key leaves no page
    behind that still teaches the old one.
    """
    from twistwsgi.config import HOST_KEYS, MOUNT_KEYS, SETTINGS

    known = {
        "server": {setting.name for setting in SETTINGS},
        "host": {setting.name for setting in HOST_KEYS} | {"mount"},
        "mount": {setting.name for setting in MOUNT_KEYS},
    }
    blocks = 0
    unknown = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```toml\n(.*?)```", page.read_text(), re.S):
            blocks += 1
            data = tomllib.loads(block)
            hosts = data.get("host", [])
            hosts = [hosts] if isinstance(hosts, dict) else hosts
            tables = [("server", data.get("server", {}))] + [("host", host) for host in hosts]
            tables += [("mount", mount) for host in hosts for mount in host.get("mount", [])]
            bare = {key: value for key, value in data.items() if key not in ("server", "host")}
            tables.append(("mount", bare))  # (a fragment: the keys of one mount)
            unknown += [
                (page.name, kind, key)
                for kind, table in tables
                for key in table
                if key not in known[kind]
            ]
    assert blocks >= 30
    assert unknown == []


def test_demo_site_builds() -> None:
    """The configuration `make run` serves validates and builds its routing table."""
    from twisted.internet.testing import MemoryReactorClock

    from twistwsgi.cli import load_config
    from twistwsgi.proxy import ProxyHandler
    from twistwsgi.service import standard_builders
    from twistwsgi.site import SiteBuilder, describe_routing
    from twistwsgi.static import StaticHandler
    from twistwsgi.testing import SynchronousThreadPool

    config = load_config({"config": str(ROOT / "twistwsgi" / "demo" / "site.toml")})
    reactor = MemoryReactorClock()
    table = SiteBuilder(
        reactor=reactor,
        threadpool=SynchronousThreadPool(),
        builders=standard_builders(reactor),
    ).build(config)
    docs_host = table.hosts.lookup("docs.localhost")
    assert docs_host is not None
    proxy_mount = docs_host.lookup(b"/app/environ")
    assert proxy_mount is not None
    assert isinstance(proxy_mount.target, ProxyHandler)
    assert isinstance(docs_host.lookup(b"/index.html").target, StaticHandler)  # type: ignore[union-attr]
    assert "docs.localhost" in describe_routing(config)
    # Its return mounts: the health check and the moved name the page links to.
    from twistwsgi.fixed_response import FixedResponse, ReturnSpec

    app_host = table.hosts.lookup("127.0.0.1")
    assert app_host is not None
    healthz = app_host.lookup(b"/healthz")
    assert healthz is not None and isinstance(healthz.target, FixedResponse)
    moved_host = table.hosts.lookup("www.docs.localhost")
    assert moved_host is not None
    moved = moved_host.lookup(b"/index.html")
    assert moved is not None and isinstance(moved.target, FixedResponse)
    assert moved.target.spec == ReturnSpec(301, "http://docs.localhost:8080$request_uri")
    # The demo page promises the HTTP_X_FORWARDED_* keys behind its proxy: the
    # application only sees them from a trusted address, the proxy's own.
    from twistwsgi.forwarding import TrustedProxies

    assert TrustedProxies(config.trusted_proxies).trusts_peer(("127.0.0.1", 50000))


def _container_instructions() -> list[tuple[str, str]]:
    """deploy/Containerfile as (instruction, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "deploy" / "Containerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def test_container_file_copies_what_exists_and_runs_a_valid_command() -> None:
    """Every file deploy/Containerfile copies from the repository exists, and its CMD,
    with the image's paths mapped back to the repository, passes --check-config.

    No container engine runs on the test machines, so the image itself is not built.
    """
    import json
    import subprocess
    import sys

    instructions = _container_instructions()
    in_image: dict[str, Path] = {}
    for keyword, arguments in instructions:
        if keyword == "COPY" and not arguments.startswith("--from"):
            *sources, destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            if len(sources) == 1 and destination.startswith("/"):
                in_image[destination] = ROOT / sources[0]
    (command,) = [json.loads(arguments) for keyword, arguments in instructions if keyword == "CMD"]
    # Log lines as text: without a terminal, `twist` writes each event as JSON.
    assert command[:4] == ["twist", "--log-format", "text", "wsgi"]
    mapped_arguments: list[str] = []
    for argument in command[4:]:
        mapped = argument
        for image_path, local in in_image.items():
            if argument.startswith(image_path + "/"):
                mapped = str(local) + argument[len(image_path) :]
        mapped_arguments.append(mapped)
    twist = Path(sys.executable).parent / "twist"
    result = subprocess.run(
        [str(twist), *command[1:4], *mapped_arguments, "--check-config"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "docs.localhost" in result.stdout
    # The published port must reach the server: all interfaces, not the demo's 127.0.0.1.
    assert "listen: tcp:8080\n" in result.stdout


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of ``page``, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.MULTILINE | re.DOTALL)


#: What the blocks of docs/library.md use without defining (they are fragments).
LIBRARY_PRELUDE = """\
from typing import Any
from twisted.application.service import MultiService
from twisted.internet import reactor
def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return []
top = MultiService()
"""


def test_library_users_type_check_against_the_package(tmp_path: Path) -> None:
    """The package ships PEP 561's py.typed: without it a user's mypy skipped it
    ("missing library stubs or py.typed marker") and the whole API was Any. With the
    zope plugin the page asks for, every block of docs/library.md and its example
    pass mypy --strict (Twisted's unannotated calls allowed, as the page says); the
    example carried a type: ignore that such a check reports as unused.
    """
    library = ROOT / "docs" / "library.md"
    blocks = python_blocks(library)
    excerpt = next(block for block in blocks if block.startswith("def build("))
    example = (ROOT / "docs" / "examples" / "wsgi_and_echo.py").read_text()
    (tmp_path / "wsgi_and_echo.py").write_text(example)  # (the .tac block imports it)
    function = "def build(" + example.split("\ndef build(", 1)[1].split("\n\n\n", 1)[0]
    without_docstring = [line for line in function.splitlines() if '"""' not in line]
    assert excerpt.splitlines() == without_docstring, "the page's excerpt left the example"
    checked = ["user.py", "wsgi_and_echo.py"]
    for number, block in enumerate(blocks):
        if block is not excerpt:
            checked.append(f"block_{number}.py")
            (tmp_path / checked[-1]).write_text(LIBRARY_PRELUDE + block)
    (tmp_path / "user.py").write_text(
        "from twistwsgi.service import make_factory\n"
        "from twistwsgi.threads import WorkerPool\n"
        "reveal_type(make_factory)\n"
        "WorkerPool('four')\n"
    )
    (tmp_path / "mypy.ini").write_text("[mypy]\nplugins = mypy_zope:plugin\n")
    mypy = [sys.executable, "-m", "mypy", "--strict", "--allow-untyped-calls"]
    result = subprocess.run(
        [*mypy, "--config-file", "mypy.ini", "--cache-dir", str(tmp_path / "cache"), *checked],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,  # type errors are expected: the output is checked
    )
    assert "py.typed" not in result.stdout, result.stdout
    assert "-> twistwsgi.http.protocol.HTTPFactory" in result.stdout, result.stdout
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert 'user.py:4: error: Argument 1 to "WorkerPool" has incompatible type "str"' in errors[0]


def test_the_library_pages_test_block_runs() -> None:
    """The in-memory test the library page shows passes as written."""
    from tests.apps import hello

    blocks = python_blocks(ROOT / "docs" / "library.md")
    exec(next(block for block in blocks if "connect(" in block), {"app": hello})
