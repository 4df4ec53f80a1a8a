"""What the two side-by-side tools share (benchmarks/harness/side_by_side.py), without servers.

The choice of servers and cases the command line makes, the header's listing of the servers,
the files written into ``--output``, and the publishing into docs, whole or between markers.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.harness import side_by_side

_KNOWN = ("twistwsgi", "waitress", "uwsgi")


@dataclass(frozen=True)
class _Case:
    name: str


_CASES = [_Case("cl-te"), _Case("te-cl"), _Case("bare-lf")]


def _args(*argv: str) -> argparse.Namespace:
    parser = side_by_side.parser(
        description="test", servers=_KNOWN, timeout=1.0, publish_help="publish"
    )
    return parser.parse_args(list(argv))


def test_everything_is_chosen_by_default() -> None:
    names, cases = side_by_side.chosen(_args(), _KNOWN, _CASES)
    assert names == list(_KNOWN)
    assert cases == _CASES


def test_servers_keep_their_given_order_and_cases_match_any_part() -> None:
    args = _args("--servers", "uwsgi, twistwsgi", "--cases", "te-,lf")
    names, cases = side_by_side.chosen(args, _KNOWN, _CASES)
    assert names == ["uwsgi", "twistwsgi"]
    assert cases == [_Case("te-cl"), _Case("bare-lf")]


def test_an_unknown_server_is_refused() -> None:
    with pytest.raises(SystemExit, match=r"unknown server\(s\): \['nginx'\]"):
        side_by_side.chosen(_args("--servers", "nginx"), _KNOWN, _CASES)


@pytest.mark.parametrize(
    "argv", [("--cases", "cl"), ("--servers", "twistwsgi"), ("--servers", "uwsgi,waitress")]
)
def test_publish_wants_every_case_against_every_server(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit, match="--publish runs every case against every server"):
        side_by_side.chosen(_args("--publish", *argv), _KNOWN, _CASES)


def test_publish_with_the_servers_in_another_order_is_whole() -> None:
    args = _args("--publish", "--servers", "uwsgi,waitress,twistwsgi")
    assert side_by_side.chosen(args, _KNOWN, _CASES)[0] == ["uwsgi", "waitress", "twistwsgi"]


def test_port_base_is_an_option_only_when_given_a_default() -> None:
    with_port = side_by_side.parser(
        description="test", servers=_KNOWN, timeout=1.0, publish_help="p", port_base=21000
    )
    assert with_port.parse_args([]).port_base == 21000
    assert not hasattr(_args(), "port_base")


def test_the_header_lists_versions_then_each_server_with_its_notes() -> None:
    runs = [
        side_by_side.ServerRun[str]("twistwsgi", {}, command="twistd -n wsgi", notes=["  (note)"]),
        side_by_side.ServerRun[str]("uwsgi", {}, unavailable="not installed", notes=["unseen"]),
    ]
    lines = side_by_side.header_lines("Run today.", {"twistwsgi": "1.0"}, runs)
    assert lines == [
        "Run today.",
        "",
        "| program | version |",
        "| --- | --- |",
        "| twistwsgi | 1.0 |",
        "",
        "- `twistwsgi`: `twistd -n wsgi`",
        "  (note)",
        "- `uwsgi` did not take part: not installed",
    ]


def test_results_are_written_as_markdown_and_json(tmp_path: Path) -> None:
    facts = side_by_side.Facts("2026-01-01 00:00 UTC", "tool.py --x", 1.5, {"twistwsgi": "1.0"})
    side_by_side.write_results(
        tmp_path / "out",
        stem="tool",
        title="The title",
        page="the page\n",
        facts=facts,
        results={"twistwsgi": {"case": 3}},
        as_json=lambda outcome: {"doubled": outcome * 2},
    )
    assert (tmp_path / "out" / "tool.md").read_text() == "# The title\n\nthe page\n"
    assert json.loads((tmp_path / "out" / "tool.json").read_text()) == {
        "meta": {
            "date": "2026-01-01 00:00 UTC",
            "command": "tool.py --x",
            "timeout_s": 1.5,
            "versions": {"twistwsgi": "1.0"},
        },
        "results": {"twistwsgi": {"case": {"doubled": 6}}},
    }


def test_publish_writes_the_whole_page(tmp_path: Path) -> None:
    docs = tmp_path / "page.md"
    docs.write_text("old\n")
    side_by_side.publish(docs, "# New\n\ntable\n")
    assert docs.read_text() == "# New\n\ntable\n"


def test_publish_between_markers_replaces_only_that_part(tmp_path: Path) -> None:
    docs = tmp_path / "page.md"
    docs.write_text("before\n<!-- a -->\nold\n<!-- b -->\nafter\n")
    side_by_side.publish(docs, "new\n\n\n", between=("<!-- a -->", "<!-- b -->"))
    assert docs.read_text() == "before\n<!-- a -->\n\nnew\n\n<!-- b -->\nafter\n"


def test_publish_between_missing_markers_leaves_the_page_alone(tmp_path: Path) -> None:
    docs = tmp_path / "page.md"
    docs.write_text("before\n<!-- a -->\nold\n")
    with pytest.raises(ValueError, match="substring not found"):
        side_by_side.publish(docs, "new", between=("<!-- a -->", "<!-- b -->"))
    assert docs.read_text() == "before\n<!-- a -->\nold\n"


def test_the_table_shows_the_servers_that_took_part_in_their_order() -> None:
    runs = [
        side_by_side.ServerRun("uwsgi", {"a": 1}),
        side_by_side.ServerRun("granian", {}, unavailable="did not start"),
        side_by_side.ServerRun("twistwsgi", {"a": 2}),
    ]
    assert side_by_side.results(runs) == {"uwsgi": {"a": 1}, "twistwsgi": {"a": 2}}
    assert list(side_by_side.results(runs)) == ["uwsgi", "twistwsgi"]
