"""Benchmarks of pgjobs against its PostgreSQL peers: ``python -m benchmarks run --help``.

Not part of the test-suite: nothing here is collected by pytest. See ``benchmarks/README.md``.
"""
