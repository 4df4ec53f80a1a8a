"""Benchmark suite: twistwsgi against its peers, measured with wrk on loopback (see run.py)."""
