"""twisted.web's own reverse proxy, the Twisted peer of scenario 6.

A `twisted.web.proxy.ReverseProxyResource` at the root of a `Site`, with the access log sent to
/dev/null like ``twistd web --logfile /dev/null``. twisted.web's proxy client speaks HTTP/1.0 to
the upstream and opens a new connection per request; that is how it ships, so it is measured so.
Its client factories are made quiet (no "Starting factory" log line per request) and only
warnings are logged, so the numbers are not a logging benchmark.

Usage: python twisted_proxy.py --listen tcp:8080:interface=127.0.0.1 --upstream 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.internet import endpoints, reactor
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.web import proxy, server


def _log_warnings_only() -> None:
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main() -> None:
    """Serve the reverse proxy until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="Twisted server endpoint string")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the upstream")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    _log_warnings_only()
    proxy.ProxyClientFactory.noisy = False
    root = proxy.ReverseProxyResource(host, int(port), b"")
    site = server.Site(root, logPath=os.devnull)
    endpoints.serverFromString(reactor, args.listen).listen(site)
    print(f"proxying {args.listen} to {args.upstream}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
