"""The benchmark harness behind ``benchmarks/run.py``: processes, wrk, scenarios and the report."""
