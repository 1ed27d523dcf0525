"""Benchmarks: scripts that print their figures and record them in BENCHMARKS.md."""
