"""Benchmarks: python -m bench.merge, python -m bench.generate."""
