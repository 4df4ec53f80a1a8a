"""The server's metrics, in Prometheus's text format (``--metrics-listen``).

What nginx's ``stub_status`` and an exporter, gunicorn's StatsD lines or granian's
``--metrics`` give, for a scraper to read: connections accepted and open,
responses by status code, how long requests took (a histogram, from a request's
first byte to its response's end: the access log's ``$request_time``), body bytes
sent, and the application's threads (busy, and requests waiting for one). The
responses and durations are also counted per host and mount (the ``host`` label is
the host's first name, ``_`` for a host without names, as nginx's catch-all
``server_name _``; ``mount`` its path), for the requests routed to one. A proxy
mount's upstreams are counted each (``upstream`` its URL; what the status pages of
nginx's upstream modules give): the requests sent to it (a request tried on two
upstreams counts on each), its answers by status, its failures by kind, how long
each took (``$upstream_response_time``), and, as gauges, whether it is left out
now, its requests in progress and its open connections.

:class:`RequestMetrics` counts in one server process, from the access log's feed
(every ended exchange and refusal: a 499 or 444 included). A :func:`snapshot` of it,
with the gauges read at that moment, is a JSON-ready dict; under ``--workers`` each
worker sends its snapshots to the master, which serves their sum
(:func:`merge`) with what ended workers had counted, so counters never go back.
:func:`render` writes the exposition format (text, version 0.0.4).

Pure logic: no Twisted.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from twistwsgi.routing import answer_error

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "METRICS_PATH",
    "UPSTREAM_GAUGES",
    "MetricsHandler",
    "RequestMetrics",
    "UpstreamState",
    "merge",
    "mount_labels",
    "render",
    "retire",
]

#: Upper bounds of the request-duration histogram, in seconds (Prometheus's default
#: buckets).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

#: Where the metrics listener answers (Prometheus's default metrics_path).
METRICS_PATH = b"/metrics"

#: The exposition format's media type.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: The counters of a snapshot (kept by the master for workers that ended), but those
#: of its histogram (see _add_counts).
_COUNTERS = ("connections_accepted", "body_bytes")
#: The gauges of a snapshot (a worker that ended has none).
GAUGES = ("connections_open", "threads", "threads_busy", "thread_queue")
#: The gauges of an upstream in a snapshot (see ``ProxyHandler.upstream_states``).
UPSTREAM_GAUGES = ("down", "active", "busy", "idle")

#: One upstream now, as a proxy mount reports it for a snapshot: its host and
#: mount labels (see :func:`mount_labels`), its name, then :data:`UPSTREAM_GAUGES`.
UpstreamState = tuple[str, str, str, int, int, int, int]


class _Ended(Protocol):
    status: int
    body_sent: int
    started: float
    # (A refusal has no route: the head was not accepted.)

    @property
    def client_closed(self) -> bool: ...


class RequestMetrics:
    """Counts one process's responses (an access-log feed, called in the reactor thread).

    Args:
        now: the clock (seconds), the one the exchanges' ``started`` comes from.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.responses: dict[int, int] = {}
        # Per bucket of DURATION_BUCKETS, then the ones above the last.
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.body_bytes = 0
        # Per (host, mount) the requests were routed to: responses by status, the
        # duration histogram and its sum.
        self.mounts: dict[tuple[str, str], _MountCounts] = {}
        # Per (host, mount, upstream): what the attempts on it came to.
        self.upstreams: dict[tuple[str, str, str], _UpstreamCounts] = {}

    def __call__(self, ended: _Ended) -> None:
        """Count ``ended`` (an exchange that ended, or a refusal)."""
        # The access log's status: 499 or 444 for an exchange that ended unanswered.
        status = ended.status or (499 if ended.client_closed else 444)
        responses = self.responses
        responses[status] = responses.get(status, 0) + 1
        self.body_bytes += ended.body_sent
        route = getattr(ended, "route", None)
        counts = None
        if route is not None:
            label = route.label
            key = mount_labels(route.host, route.script_name if label is None else label)
            counts = self.mounts.get(key)
            if counts is None:
                counts = self.mounts[key] = _MountCounts()
            counts.responses[status] = counts.responses.get(status, 0) + 1
            # A proxy's notes of the upstreams it tried (see _AttemptNotes).
            attempts = getattr(getattr(ended, "log_notes", None), "attempts", None)
            if attempts is not None:
                self._count_attempts(key, attempts())
        if status == 101:
            return  # a tunnel's lifetime is no request's duration
        took = max(self._now() - ended.started, 0.0)
        bucket = bisect.bisect_left(DURATION_BUCKETS, took)
        self.durations[bucket] += 1
        self.duration_sum += took
        if counts is not None:
            counts.durations[bucket] += 1
            counts.duration_sum += took

    def _count_attempts(
        self, key: tuple[str, str], attempts: Iterable[tuple[str, int, str | None, float]]
    ) -> None:
        """Count a request's attempts on the upstreams of the mount ``key``."""
        upstreams = self.upstreams
        for upstream, answered, failure, took in attempts:
            counts = upstreams.get((*key, upstream))
            if counts is None:
                counts = upstreams[(*key, upstream)] = _UpstreamCounts()
            counts.requests += 1
            if answered:
                counts.responses[answered] = counts.responses.get(answered, 0) + 1
            if failure is not None:
                counts.failures[failure] = counts.failures.get(failure, 0) + 1
            if answered == 101:
                continue  # a tunnel's lifetime is no response's time
            counts.durations[bisect.bisect_left(DURATION_BUCKETS, took)] += 1
            counts.duration_sum += took

    def snapshot(
        self,
        connections_accepted: int,
        gauges: Mapping[str, int],
        upstreams: Iterable[UpstreamState] = (),
    ) -> dict[str, Any]:
        """The counts so far and ``gauges`` now, JSON-ready (see :func:`render`).

        Args:
            connections_accepted: the connections accepted so far.
            gauges: the values of :data:`GAUGES` now.
            upstreams: the upstreams of the proxy mounts served now; an upstream
                counted earlier but no longer served (a reload removed it) keeps
                its counts, with gauges of 0.
        """
        entries: dict[tuple[str, str, str], dict[str, Any]] = {}
        for key, counts in self.upstreams.items():
            counted = entries[key] = _empty_upstream(*key)
            counted["requests"] = counts.requests
            counted["responses"] = {str(status): n for status, n in counts.responses.items()}
            counted["failures"] = dict(counts.failures)
            counted["durations"] = list(counts.durations)
            counted["duration_sum"] = counts.duration_sum
        for host, mount, upstream, *values in upstreams:
            entry = entries.get((host, mount, upstream))
            if entry is None:
                entry = entries[host, mount, upstream] = _empty_upstream(host, mount, upstream)
            # An upstream listed twice in a mount has two pools: one series, down
            # if either is, their requests and connections added up.
            entry["down"] = max(entry["down"], values[0])
            for name, value in zip(UPSTREAM_GAUGES[1:], values[1:], strict=True):
                entry[name] += value
        return {
            "connections_accepted": connections_accepted,
            "responses": {str(status): count for status, count in self.responses.items()},
            "durations": list(self.durations),
            "duration_sum": self.duration_sum,
            "body_bytes": self.body_bytes,
            "mounts": [
                {
                    "host": host,
                    "mount": mount,
                    "responses": {str(status): count for status, count in counts.responses.items()},
                    "durations": list(counts.durations),
                    "duration_sum": counts.duration_sum,
                }
                for (host, mount), counts in self.mounts.items()
            ],
            "upstreams": list(entries.values()),
            **{name: int(gauges.get(name, 0)) for name in GAUGES},
        }


def mount_labels(host: str | None, prefix: bytes) -> tuple[str, str]:
    """The ``host`` and ``mount`` labels of a host's first name and a mount's prefix.

    ``prefix`` is the mount's path as written for an exact or regular-expression
    mount (``Route.label``): ``~ ^/api/`` is not the root mount's ``/``.
    """
    return host or CATCH_ALL, prefix.decode("utf-8", "replace") or "/"


#: The ``host`` label of a host without names (the command line's, a catch-all).
CATCH_ALL = "_"


class _MountCounts:
    """What one mount's requests came to (see :class:`RequestMetrics`)."""

    __slots__ = ("duration_sum", "durations", "responses")

    def __init__(self) -> None:
        self.responses: dict[int, int] = {}
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0


class _UpstreamCounts:
    """What the attempts on one upstream of a mount came to (see :class:`RequestMetrics`)."""

    __slots__ = ("duration_sum", "durations", "failures", "requests", "responses")

    def __init__(self) -> None:
        self.requests = 0
        self.responses: dict[int, int] = {}
        self.failures: dict[str, int] = {}
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0


def _empty_upstream(host: str, mount: str, upstream: str) -> dict[str, Any]:
    """A snapshot's entry of an upstream with nothing counted."""
    return {
        "host": host,
        "mount": mount,
        "upstream": upstream,
        "requests": 0,
        "responses": {},
        "failures": {},
        "durations": [0] * (len(DURATION_BUCKETS) + 1),
        "duration_sum": 0.0,
        **dict.fromkeys(UPSTREAM_GAUGES, 0),
    }


def empty() -> dict[str, Any]:
    """A snapshot with nothing counted."""
    return {
        "connections_accepted": 0,
        "responses": {},
        "durations": [0] * (len(DURATION_BUCKETS) + 1),
        "duration_sum": 0.0,
        "body_bytes": 0,
        "mounts": [],
        "upstreams": [],
        **dict.fromkeys(GAUGES, 0),
    }


def checked(report: object) -> dict[str, Any] | None:
    """``report`` if it is a snapshot of the shape :meth:`RequestMetrics.snapshot` gives.

    What a worker sends its master passes here first: a worker runs the
    application's code, and may run another version of this module after a reload.
    ``None`` for anything else: numbers that are not whole and not negative (the
    duration sum a number), a status that is not three digits, a histogram of
    another length, a mount's host or path or an upstream's name or failure that
    is not text. A report without ``mounts`` or ``upstreams`` (a worker of a
    version before them) counts with none.
    """
    if not isinstance(report, dict):
        return None
    upstreams = report.get("upstreams", [])
    if not isinstance(upstreams, list) or not all(map(_upstream_valid, upstreams)):
        return None
    mounts = report.get("mounts", [])
    if not isinstance(mounts, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("host"), str)
        and isinstance(entry.get("mount"), str)
        and _counts_valid(entry)
        for entry in mounts
    ):
        return None
    for name in ("connections_accepted", "body_bytes", *GAUGES):
        value = report.get(name)
        if type(value) is not int or value < 0:
            return None
    return report if _counts_valid(report) else None


def _upstream_valid(entry: object) -> bool:
    """Whether ``entry`` is an upstream's entry of a snapshot (see :func:`checked`)."""
    if not isinstance(entry, dict):
        return False
    if not all(isinstance(entry.get(name), str) for name in ("host", "mount", "upstream")):
        return False
    for name in ("requests", *UPSTREAM_GAUGES):
        value = entry.get(name)
        if type(value) is not int or value < 0:
            return False
    failures = entry.get("failures")
    return (
        isinstance(failures, dict)
        and all(
            isinstance(kind, str) and type(count) is int and count >= 0
            for kind, count in failures.items()
        )
        and _counts_valid(entry)
    )


def _counts_valid(counts: Mapping[str, Any]) -> bool:
    """Whether ``counts`` has valid ``responses``, ``durations`` and ``duration_sum``."""
    duration_sum = counts.get("duration_sum")
    # A float (as JSON gives back a snapshot's): an int past a float's range would
    # make the master's sums raise.
    if type(duration_sum) is not float or not 0 <= duration_sum < math.inf:
        return False
    responses = counts.get("responses")
    if not isinstance(responses, dict) or not all(
        isinstance(status, str)
        and len(status) == 3
        and status.isascii()  # (isdigit takes other scripts' digits, int() not all)
        and status.isdigit()
        and type(count) is int
        and count >= 0
        for status, count in responses.items()
    ):
        return False
    durations = counts.get("durations")
    return (
        isinstance(durations, list)
        and len(durations) == len(DURATION_BUCKETS) + 1
        and all(type(count) is int and count >= 0 for count in durations)
    )


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of ``snapshots`` (counters and gauges alike; see :func:`checked`)."""
    total = empty()
    mounts: dict[tuple[str, str], dict[str, Any]] = {}
    upstreams: dict[tuple[str, str, str], dict[str, Any]] = {}
    for snapshot in snapshots:
        for name in (*_COUNTERS, *GAUGES):
            total[name] += snapshot.get(name, 0)
        _add_counts(total, snapshot)
        for entry in snapshot.get("mounts", ()):
            key = (entry["host"], entry["mount"])
            kept = mounts.get(key)
            if kept is None:
                kept = mounts[key] = {
                    "host": key[0],
                    "mount": key[1],
                    "responses": {},
                    "durations": [0] * (len(DURATION_BUCKETS) + 1),
                    "duration_sum": 0.0,
                }
            _add_counts(kept, entry)
        for entry in snapshot.get("upstreams", ()):
            key3 = (entry["host"], entry["mount"], entry["upstream"])
            counted = upstreams.get(key3)
            if counted is None:
                counted = upstreams[key3] = _empty_upstream(*key3)
            _add_counts(counted, entry)
            for name in ("requests", *UPSTREAM_GAUGES):
                counted[name] += entry[name]
            failures = counted["failures"]
            for kind, count in entry["failures"].items():
                failures[kind] = failures.get(kind, 0) + count
    total["mounts"] = list(mounts.values())
    total["upstreams"] = list(upstreams.values())
    return total


def _add_counts(total: dict[str, Any], counts: Mapping[str, Any]) -> None:
    """Add the ``responses``, ``durations`` and ``duration_sum`` of ``counts`` to ``total``'s."""
    total["duration_sum"] += counts.get("duration_sum", 0.0)
    responses = total["responses"]
    for status, count in counts.get("responses", {}).items():
        responses[status] = responses.get(status, 0) + count
    durations = counts.get("durations") or [0] * len(total["durations"])
    total["durations"] = [a + b for a, b in zip(total["durations"], durations, strict=True)]


def retire(retired: Mapping[str, Any], last: Mapping[str, Any]) -> dict[str, Any]:
    """What ended processes counted: ``retired`` plus the counters of ``last`` (no gauges)."""
    kept = merge([retired, last])
    for name in GAUGES:
        kept[name] = 0
    # An upstream that counted nothing was there for its gauges only: as in one
    # process, one a reload removed is not shown once the workers serving it end.
    kept["upstreams"] = [entry for entry in kept["upstreams"] if entry["requests"]]
    for entry in kept["upstreams"]:
        for name in UPSTREAM_GAUGES:
            entry[name] = 0
    return kept


def render(snapshot: Mapping[str, Any], workers: int | None = None) -> bytes:
    """``snapshot`` in Prometheus's text format; ``workers``: the worker processes serving."""
    lines: list[str] = []

    _family(
        lines,
        "twistwsgi_connections_accepted_total",
        "counter",
        "Connections accepted.",
        [("", snapshot["connections_accepted"])],
    )
    _family(
        lines,
        "twistwsgi_connections_open",
        "gauge",
        "Connections open now.",
        [("", snapshot["connections_open"])],
    )
    responses = sorted(snapshot["responses"].items(), key=lambda item: int(item[0]))
    _family(
        lines,
        "twistwsgi_responses_total",
        "counter",
        "Responses by status code (499: the client left first; 444: dropped).",
        [(f'{{code="{status}"}}', count) for status, count in responses],
    )
    _histograms(
        lines,
        "twistwsgi_request_duration_seconds",
        "From a request's first byte to its response's end ($request_time).",
        [("", snapshot)],
    )
    _family(
        lines,
        "twistwsgi_response_body_bytes_total",
        "counter",
        "Response body bytes sent.",
        [("", snapshot["body_bytes"])],
    )
    _family(
        lines,
        "twistwsgi_threads",
        "gauge",
        "Threads that run the applications.",
        [("", snapshot["threads"])],
    )
    _family(
        lines,
        "twistwsgi_threads_busy",
        "gauge",
        "Threads running a request now.",
        [("", snapshot["threads_busy"])],
    )
    _family(
        lines,
        "twistwsgi_thread_queue",
        "gauge",
        "Requests waiting for a thread now.",
        [("", snapshot["thread_queue"])],
    )
    if workers is not None:
        _family(
            lines,
            "twistwsgi_workers",
            "gauge",
            "Worker processes serving now.",
            [("", workers)],
        )
    mounts = sorted(snapshot.get("mounts", ()), key=lambda entry: (entry["host"], entry["mount"]))
    _family(
        lines,
        "twistwsgi_mount_responses_total",
        "counter",
        "Responses by host, mount and status code, for the requests routed to a mount.",
        [
            (f'{{{_mount_labels(entry)},code="{status}"}}', count)
            for entry in mounts
            for status, count in sorted(entry["responses"].items(), key=lambda item: int(item[0]))
        ],
    )
    _histograms(
        lines,
        "twistwsgi_mount_request_duration_seconds",
        "The request duration histogram by host and mount.",
        [(_mount_labels(entry), entry) for entry in mounts],
    )
    upstreams = sorted(
        snapshot.get("upstreams", ()),
        key=lambda entry: (entry["host"], entry["mount"], entry["upstream"]),
    )
    if upstreams:
        _render_upstreams(lines, upstreams)
    return ("\n".join(lines) + "\n").encode()


def _family(
    lines: list[str], name: str, kind: str, text: str, samples: list[tuple[str, float]]
) -> None:
    """Append one family's HELP and TYPE lines and its samples (labels, value)."""
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")
    lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)


def _histograms(
    lines: list[str], name: str, text: str, series: list[tuple[str, Mapping[str, Any]]]
) -> None:
    """Append one histogram family: each series its labels and its counts.

    The counts are a mapping with ``durations`` and ``duration_sum``.
    """
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} histogram")
    for labels, counts in series:
        lines.extend(_histogram(name, labels, counts["durations"], counts["duration_sum"]))


def _render_upstreams(lines: list[str], upstreams: list[Mapping[str, Any]]) -> None:
    """The families of the proxy mounts' upstreams (``upstreams`` in label order)."""
    labelled = [(entry, _upstream_labels(entry)) for entry in upstreams]

    _family(
        lines,
        "twistwsgi_upstream_requests_total",
        "counter",
        "Requests sent to an upstream of a proxy mount (a request tried on two counts on each).",
        [(f"{{{labels}}}", entry["requests"]) for entry, labels in labelled],
    )
    _family(
        lines,
        "twistwsgi_upstream_responses_total",
        "counter",
        "Upstream answers by status code (relayed or not: retried, or replaced by an error page).",
        [
            (f'{{{labels},code="{status}"}}', count)
            for entry, labels in labelled
            for status, count in sorted(entry["responses"].items(), key=lambda item: int(item[0]))
        ],
    )
    _family(
        lines,
        "twistwsgi_upstream_failures_total",
        "counter",
        "Upstream attempts that failed, by what went wrong: connect, closed, protocol,"
        " timeout, stalled (its body stopped), local (this server lacked descriptors).",
        [
            (f'{{{labels},reason="{_label_value(kind)}"}}', count)
            for entry, labels in labelled
            for kind, count in sorted(entry["failures"].items())
        ],
    )
    _histograms(
        lines,
        "twistwsgi_upstream_response_duration_seconds",
        "From giving an upstream the request to the end of its response or failure"
        " ($upstream_response_time).",
        [(labels, entry) for entry, labels in labelled],
    )
    _family(
        lines,
        "twistwsgi_upstream_down",
        "gauge",
        "1 while an upstream is left out (max_fails failures, a failed health check, or"
        " marked down);"
        " under --workers, the workers that left it out.",
        [(f"{{{labels}}}", entry["down"]) for entry, labels in labelled],
    )
    _family(
        lines,
        "twistwsgi_upstream_active_requests",
        "gauge",
        "Requests in progress on an upstream (what max_conns limits).",
        [(f"{{{labels}}}", entry["active"]) for entry, labels in labelled],
    )
    _family(
        lines,
        "twistwsgi_upstream_connections",
        "gauge",
        "Open connections to an upstream: busy (a request or tunnel on it) or idle (pooled).",
        [
            (f'{{{labels},state="{state}"}}', entry[state])
            for entry, labels in labelled
            for state in ("busy", "idle")
        ],
    )


def _histogram(name: str, labels: str, durations: list[int], total: float) -> list[str]:
    """The sample lines of one duration histogram, ``labels`` joined to ``le``."""
    lines = []
    cumulative = 0
    prefix = labels + "," if labels else ""
    for bound, count in zip((*DURATION_BUCKETS, math.inf), durations, strict=True):
        cumulative += count
        # (Bounds written as floats, as Prometheus's own clients write them.)
        label = "+Inf" if bound == math.inf else repr(float(bound))
        lines.append(f'{name}_bucket{{{prefix}le="{label}"}} {_number(cumulative)}')
    braces = f"{{{labels}}}" if labels else ""
    lines.append(f"{name}_sum{braces} {_number(total)}")
    lines.append(f"{name}_count{braces} {_number(cumulative)}")
    return lines


def _mount_labels(entry: Mapping[str, Any]) -> str:
    """The ``host`` and ``mount`` labels of a mount's samples."""
    return f'host="{_label_value(entry["host"])}",mount="{_label_value(entry["mount"])}"'


def _upstream_labels(entry: Mapping[str, Any]) -> str:
    """The ``host``, ``mount`` and ``upstream`` labels of an upstream's samples."""
    return f'{_mount_labels(entry)},upstream="{_label_value(entry["upstream"])}"'


def _label_value(text: str) -> str:
    """A label value as the text format escapes it: backslash, quote, line feed."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value as the format writes it (``+Inf``; whole numbers without ``.0``)."""
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class MetricsHandler:
    """Answers ``GET /metrics`` on the metrics listener with :func:`render`'s text.

    Other paths get 404, other methods 405: the listener serves nothing else.

    Args:
        collect: the exposition text now.
    """

    def __init__(self, collect: Callable[[], bytes]) -> None:
        self._collect = collect

    def handle(self, exchange: Exchange) -> None:
        """Answer one request."""
        request = exchange.request
        if request.path != METRICS_PATH:
            answer_error(exchange, 404, b"Not Found: the metrics are at /metrics\n")
            return
        if request.method not in (b"GET", b"HEAD"):
            answer_error(exchange, 405, b"Method Not Allowed\n", [(b"Allow", b"GET, HEAD")])
            return
        body = self._collect()
        exchange.start_response(
            200,
            [
                (b"Content-Type", CONTENT_TYPE),
                (b"Content-Length", b"%d" % len(body)),
                (b"Cache-Control", b"no-store"),
            ],
        )
        exchange.finish(body)
