"""The floor of the benchmarks (benchmarks/twisted_floor.py): its answers and its two launches.

The floor is a yardstick, not a server, but a yardstick that answers wrongly (a response h11
cannot read, one answer for two pipelined heads) would make every ratio against it wrong.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from pathlib import Path

import h11
import pytest
from twisted.internet.testing import StringTransport

from benchmarks import twisted_floor
from benchmarks.harness import servers
from benchmarks.harness.servers import Target
from tests.test_bench_rounds import bare_context

REPO = Path(__file__).resolve().parent.parent
REQUEST = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def _responses(wire: bytes) -> list[tuple[int, bytes]]:
    """Each response on ``wire`` as (status, body), read by h11."""
    client = h11.Connection(h11.CLIENT)
    found: list[tuple[int, bytes]] = []
    client.receive_data(wire)
    while True:
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        client.send(h11.EndOfMessage())
        status, body = 0, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                return found
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        found.append((status, body))
        client.start_next_cycle()


def _hello_protocol() -> tuple[twisted_floor.AnswerEachHead, StringTransport]:
    responses = twisted_floor._hello()
    responses.refresh_date()
    protocol = twisted_floor.AnswerEachHead(responses, True, twisted_floor._twisted_write)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_every_pipelined_head_gets_its_own_answer_however_the_bytes_are_split() -> None:
    wire = REQUEST * 3
    for cut in range(1, len(wire)):
        protocol, transport = _hello_protocol()
        protocol.dataReceived(wire[:cut])
        protocol.dataReceived(wire[cut:])
        assert _responses(transport.value()) == [(200, b"Hello, World!")] * 3, cut


def test_a_file_is_answered_by_its_path_and_anything_else_is_404(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"alpha")
    responses = twisted_floor._files(tmp_path)
    responses.refresh_date()
    protocol = twisted_floor.AnswerEachHead(responses, False, twisted_floor._twisted_write)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"GET /static/a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /static/b HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert _responses(transport.value()) == [(200, b"alpha"), (404, b"")]


def test_only_the_direct_floor_is_launched_with_twistwsgi_paths(tmp_path: Path) -> None:
    context = bare_context(tmp_path)
    target = Target("wsgi", "hello")
    plain = servers.build(servers.FLOOR, context, target, 8080)
    direct = servers.build(servers.FLOOR_DIRECT, context, target, 8080)
    assert isinstance(plain, servers.Launch) and isinstance(direct, servers.Launch)
    assert "--direct" not in plain.argv
    assert direct.argv == [*plain.argv[:-1], "--direct", "hello"]
    assert servers.build(servers.FLOOR_DIRECT, context, Target("wsgi", "sleepy"), 8080) is None


@pytest.mark.parametrize("direct", [False, True], ids=["stock", "direct"])
def test_the_floor_answers_a_real_client_on_either_path(direct: bool) -> None:
    argv = [sys.executable, str(REPO / "benchmarks" / "twisted_floor.py")]
    argv += ["--listen", "tcp:0:interface=127.0.0.1", *(["--direct"] if direct else []), "hello"]
    with subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True) as floor:
        _ask_three_times(floor)


def _ask_three_times(floor: subprocess.Popen[str]) -> None:
    try:
        assert floor.stdout is not None
        announced = floor.stdout.readline()
        port = re.search(r"port=(\d+)", announced)
        assert port, announced
        connection = http.client.HTTPConnection("127.0.0.1", int(port.group(1)), timeout=30)
        for _ in range(3):  # one keep-alive connection, several requests
            connection.request("GET", "/")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"Hello, World!")
        connection.close()
    finally:
        floor.kill()
        floor.wait()
