"""Benchmarks run by hand on the target machine (see benchmarks/README.md)."""
