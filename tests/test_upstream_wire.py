"""Some behaviours of ``benchmarks/upstream_wire.py`` against twistwsgi alone, on real sockets.

The tool compares twistwsgi's reverse proxy with nginx's in front of a misbehaving upstream
and needs nginx; this runs a few of its cases through an in-process twistwsgi proxy (the
real reactor) to its own scripted upstream, so the tool's upstream, client and verdict
cannot rot, and so twistwsgi's answers to those cases stay what the table says: a broken
response refused or cut, never passed on as well-framed, and the next request on the
client connection answered with its own response, never the broken one's leftovers.
"""

from __future__ import annotations

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from benchmarks import upstream_wire
from tests.live import port_of, serve_live

#: Each case, and the start of what the client must read for it.
EXPECTED = {
    "cl-duplicate-differing": "502 58B; B ok",
    "cl-and-chunked": "502 58B; B ok",
    "chunk-size-sign": "502 58B; B ok",
    "body-longer-second-response": "200 2B; B ok",
    "unsolicited-on-idle": "200 2B; B ok",
    "head-with-body": "200; B ok",
    "1xx-with-body": "502 58B; B ok",
    "body-short-then-close": "200 cut after 4 bytes, closed",
    "status-icy": "502 58B; B ok",
}


class UpstreamWireTests(TestCase):
    """The cases of ``EXPECTED``, each on its own client connection."""

    async def test_twistwsgi_answers_the_cases_as_the_table_says(self) -> None:
        cases = [case for case in upstream_wire.CASES if case.name in EXPECTED]
        upstream = upstream_wire.Upstream(0, cases)
        self.addCleanup(upstream.close)
        service = serve_live(
            self,
            {
                "proxy": [f"/=http://127.0.0.1:{upstream.port}"],
                "listen": ["tcp:0:interface=127.0.0.1"],
                "access_log": "off",
            },
        )
        port = port_of(service)
        seen = {}
        for case in cases:
            outcome = await deferToThread(upstream_wire.exchange, port, case, 5.0)
            seen[case.name] = (outcome.text, outcome.broken)
        assert seen == {name: (text, False) for name, text in EXPECTED.items()}
