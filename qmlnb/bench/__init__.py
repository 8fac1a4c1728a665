"""Benchmarks run by `python -m qmlnb bench NAME`; each writes JSON with its environment."""
