"""try_files on static mounts: the names tried for a request, as nginx's try_files.

Through the routing table a configuration file builds (raw requests, h11 reading
the answers), with the served directory of tests.test_static; the value's checks
as configuration errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_static import accel_app, config_text, make_site, request, router_for
from twistwsgi.cli import load_config
from twistwsgi.config import ConfigError
from twistwsgi.routing import Router
from twistwsgi.testing import PullingTransport, connect


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_site(tmp_path)


def spa(site_root: Path, tmp_path: Path, names: list[str], more: str = "") -> Router:
    (site_root / "index.html").write_bytes(b"<div id=app></div>")
    (site_root / "about.html").write_bytes(b"<h1>about</h1>")
    options = f"try_files = {json.dumps(names)}\n{more}"
    return router_for(tmp_path, config_text(site_root, options, app=None))


def test_a_single_page_application_gets_its_index_for_every_other_path(
    site: Path, tmp_path: Path
) -> None:
    """As nginx's try_files $uri $uri/ /index.html;."""
    router = spa(site, tmp_path, ["$uri", "$uri/", "/index.html"])
    assert request(router, b"/static/a.txt").body == b"hello static\n"
    docs = request(router, b"/static/docs?x=1")
    # To the slash first, as without try_files, so its relative links resolve.
    assert (docs.status, docs.header(b"location")) == (301, b"/static/docs/?x=1")
    assert request(router, b"/static/docs/").body == b"<h1>docs</h1>"
    for path in (b"/static/orders/42", b"/static/settings?tab=2", b"/static/"):
        response = request(router, path)
        assert (response.status, response.body) == (200, b"<div id=app></div>"), path


def test_the_fallback_is_served_with_its_validators_and_conditions(
    site: Path, tmp_path: Path
) -> None:
    router = spa(site, tmp_path, ["$uri", "/index.html"])
    first = request(router, b"/static/route/x")
    etag = first.header(b"etag")
    assert etag is not None and first.header(b"content-type") == b"text/html; charset=utf-8"
    again = request(router, b"/static/other", [(b"If-None-Match", etag)])
    assert again.status == 304
    head = request(router, b"/static/route/x", method=b"HEAD")
    assert (head.status, head.body, head.header(b"etag")) == (200, b"", etag)
    part = request(router, b"/static/x", [(b"Range", b"bytes=0-4")])
    assert (part.status, part.body) == (206, b"<div ")


def test_clean_urls_try_the_html_file(site: Path, tmp_path: Path) -> None:
    """As nginx's try_files $uri $uri.html $uri/ =404; (a site exported with clean URLs)."""
    router = spa(site, tmp_path, ["$uri", "$uri.html", "$uri/", "=404"])
    assert request(router, b"/static/about").body == b"<h1>about</h1>"
    assert request(router, b"/static/about.html").body == b"<h1>about</h1>"
    assert request(router, b"/static/docs/").body == b"<h1>docs</h1>"
    assert request(router, b"/static/nothing").status == 404


def test_a_last_status_is_the_answer_when_nothing_exists(site: Path, tmp_path: Path) -> None:
    router = spa(site, tmp_path, ["$uri", "=410"])
    response = request(router, b"/static/gone")
    assert (response.status, response.body) == (410, b"Gone\n")


def test_a_name_without_a_slash_is_a_file_and_with_one_a_directory_with_an_index(
    site: Path, tmp_path: Path
) -> None:
    """A directory is no file, and one without an index file no directory here.

    docs is a directory: "$uri" does not take it; empty has no index: "$uri/" does
    not take it either (nginx would, then answer 403).
    """
    router = spa(site, tmp_path, ["$uri", "$uri/", "/index.html"])
    assert request(router, b"/static/empty").body == b"<div id=app></div>"
    fixed = spa(site, tmp_path, ["$uri", "/docs/"])
    assert request(fixed, b"/static/elsewhere").body == b"<h1>docs</h1>"
    assert request(router, b"/static/empty/").body == b"<div id=app></div>"
    files_only = spa(site, tmp_path, ["$uri", "/index.html"])
    assert request(files_only, b"/static/docs").body == b"<div id=app></div>"
    listing = spa(site, tmp_path, ["$uri/", "/index.html"], "listing = true")
    assert b"app.css" in request(listing, b"/static/css/").body
    assert request(listing, b"/static/css").status == 301
    assert request(listing, b"/static/").body == b"<div id=app></div>"  # its index


def test_hidden_names_and_links_out_are_never_found(site: Path, tmp_path: Path) -> None:
    """A candidate is looked up as a request's path is: dotfiles stay hidden, links
    out of the directory do not exist, and nothing outside is reachable.
    """
    router = spa(site, tmp_path, ["$uri", "/index.html"])
    for path in (b"/static/.env", b"/static/link_out/secret.txt", b"/static/link_file"):
        response = request(router, path)
        assert response.body == b"<div id=app></div>", path
    assert request(router, b"/static/link_in").body == b"hello static\n"
    assert request(router, b"/static/.well-known/acme").body == b"token"
    gz = spa(site, tmp_path, ["$uri.gz", "=404"])
    # page.html.gz exists, and is sent as a file of its own: no decoding promised.
    assert request(gz, b"/static/page.html").body == b"gzip bytes"
    assert request(gz, b"/static/sub/.hidden").status == 404


def test_misses_fall_through_to_the_application(site: Path, tmp_path: Path) -> None:
    """As nginx's try_files $uri $uri.html @app;."""
    (site / "about.html").write_bytes(b"<h1>about</h1>")
    text = config_text(site, 'try_files = ["$uri", "$uri.html"]\nfallthrough = true')
    text = text.replace('path = "/static"', 'path = "/"')
    text += '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
    router = router_for(tmp_path, text)
    assert request(router, b"/about").body == b"<h1>about</h1>"
    assert request(router, b"/hello").body == b"Hello, World!"


def test_precompressed_siblings_still_go_to_clients_that_accept_them(
    site: Path, tmp_path: Path
) -> None:
    router = spa(site, tmp_path, ["$uri", "/index.html"])
    response = request(router, b"/static/page.html", [(b"Accept-Encoding", b"br")])
    assert (response.body, response.header(b"content-encoding")) == (b"brotli bytes", b"br")


def test_other_methods_are_refused_as_before(site: Path, tmp_path: Path) -> None:
    router = spa(site, tmp_path, ["$uri", "/index.html"])
    assert request(router, b"/static/x", method=b"POST").status == 405


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('["=404", "$uri"]', "'=404': a status (=CODE) can only come last"),
        ('["$uri", "=200"]', "'=200': expected =CODE with a status from 400 to 599"),
        ('["=404"]', "needs a name to try before =404"),
        ('["index.html"]', "'index.html' is not a path: start it with / or $uri"),
        ('["$uri/.."]', "'$uri/..' can make a . or .. segment"),
        ('["/../../etc/passwd"]', "can make a . or .. segment"),
        # "" for the mount's own directory would make "..": refused too.
        ('["$uri.."]', "'$uri..' can make a . or .. segment"),
        ('["$uri../index.html"]', "can make a . or .. segment"),
        ('["$uri", "/index.html;"]', "'/index.html;' ends with nginx's ; (leave it out here)"),
        ('["/index.html?v=1"]', "a name is a file's path, without a query or fragment"),
        ('"   "', "is empty: list the names to try, or leave try_files out"),
        ('["$uri\u00a0x"]', "holds a space, a control character or a backslash"),
        ('["$uri\tx"]', "holds a space, a control character or a backslash"),
        ('["$uri\\\\x"]', "holds a space, a control character or a backslash"),
        ('["$uri", "=499"]', "expected =CODE with a status from 400 to 599"),
        ('["$request_uri"]', "the only variable here is $uri"),
        ('["$uri x"]', "holds a space, a control character or a backslash"),
        ("[3]", "3 is not a name to try"),
        ("true", "expected a list of names"),
    ],
)
def test_bad_values_name_the_key(site: Path, tmp_path: Path, value: str, problem: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(config_text(site, f"try_files = {value}"))
    with pytest.raises(ConfigError) as raised:
        load_config({"config": str(path)})
    message = str(raised.value)
    assert message.startswith("site.toml: host[0].mount[0].try_files: "), message
    assert problem in message


def test_every_uri_of_a_name_is_the_path(site: Path, tmp_path: Path) -> None:
    """${uri} may be followed by letters; /x$uri puts text before the path."""
    (site / "a.txta.txt").write_bytes(b"twice")
    (site / "css" / "a.txthtml").write_bytes(b"braced")
    (site / "css" / "a.txt").write_bytes(b"below")
    twice = spa(site, tmp_path, ["$uri$uri", "=404"])
    assert request(twice, b"/static/a.txt").status == 404  # "/a.txt/a.txt"
    assert request(spa(site, tmp_path, ["${uri}${uri}", "=404"]), b"/static/a.txt").status == 404
    braced = spa(site, tmp_path, ["/css${uri}html", "=404"])
    assert request(braced, b"/static/a.txt").body == b"braced"
    prefixed = spa(site, tmp_path, ["/css$uri", "=404"])
    assert request(prefixed, b"/static/a.txt").body == b"below"
    # A variable's name is read without case, as nginx reads it (and every template here).
    upper = spa(site, tmp_path, ["/css$URI", "/css${Uri}html", "=404"])
    assert request(upper, b"/static/a.txt").body == b"below"


def test_a_name_without_a_slash_never_takes_a_directory(site: Path, tmp_path: Path) -> None:
    """As nginx tells them apart, by the name as configured: "$uri" for /docs/ is a
    directory, not a file, so the fallback answers.
    """
    router = spa(site, tmp_path, ["$uri", "/index.html"])
    assert request(router, b"/static/docs/").body == b"<div id=app></div>"
    assert request(router, b"/static/fifo").body == b"<div id=app></div>"  # no FIFO


def test_the_mounts_own_directory_is_redirected_to_its_slash(site: Path, tmp_path: Path) -> None:
    router = spa(site, tmp_path, ["$uri", "/index.html"])
    response = request(router, b"/static")
    assert (response.status, response.header(b"location")) == (301, b"/static/")
    assert request(router, b"/static/").body == b"<div id=app></div>"


def test_444_closes_the_connection(site: Path, tmp_path: Path) -> None:
    router = spa(site, tmp_path, ["$uri", "=444"])
    connection = connect(router, transport=PullingTransport())
    connection.send(b"GET /static/nothing HTTP/1.1\r\nHost: files.example\r\n\r\n")
    assert connection.take() == b""
    assert connection.is_closed()


@pytest.mark.parametrize(
    "case",
    [
        ("X-Accel-Redirect", "/protected/about", 200, b"<h1>about</h1>"),
        ("X-Accel-Redirect", "/protected/missing.pdf", 200, b"<div id=app></div>"),
        # X-Sendfile names the file itself: no other name is tried for it.
        ("X-Sendfile", "SITE/missing.pdf", 404, None),
    ],
)
def test_an_application_redirect_goes_through_try_files(
    site: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, str, int, bytes | None],
) -> None:
    """X-Accel-Redirect names a URI, which nginx routes again: the mount's try_files
    answers it (a placeholder for a file missing).
    """
    import tests.apps

    field, value, status, body = case
    (site / "index.html").write_bytes(b"<div id=app></div>")
    (site / "about.html").write_bytes(b"<h1>about</h1>")
    app = accel_app(field, value.replace("SITE", str(site)))
    monkeypatch.setattr(tests.apps, "accel", app, raising=False)
    text = (
        '[[host]]\nnames = ["files.example"]\n'
        f'[[host.mount]]\npath = "/protected"\nstatic = "{site}"\ninternal = true\n'
        'try_files = ["$uri", "$uri.html", "/index.html"]\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:accel"\nx_accel_redirect = true\n'
    )
    router = router_for(tmp_path, text)
    response = request(router, b"/download")
    assert response.status == status
    if body is not None:
        assert response.body == body
    assert request(router, b"/protected/about").status == 404  # internal


def test_nginxs_spelling_in_one_string_reads_the_same(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(config_text(site, 'try_files = "$uri ${uri}.html $uri/ =404"'))
    config = load_config({"config": str(path)})
    options = config.hosts[0].mounts[0].options
    assert options["try_files"] == ("$uri", "${uri}.html", "$uri/", "=404")


def test_the_last_status_sends_the_hosts_error_page(site: Path, tmp_path: Path) -> None:
    (tmp_path / "404.html").write_bytes(b"<h1>lost</h1>")
    text = config_text(site, 'try_files = ["$uri", "$uri.html", "=404"]').replace(
        "default = true\n", f'default = true\nerror_pages = {{ 404 = "{tmp_path / "404.html"}" }}\n'
    )
    response = request(router_for(tmp_path, text), b"/static/nothing")
    assert (response.status, response.body) == (404, b"<h1>lost</h1>")
