"""Benchmarks of siko-hub; docs/BENCHMARKS.md records their runs."""
