"""Benchmarks at scale with a printed report; run by `make bench`, never by `make test`."""
