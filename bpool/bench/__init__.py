"""Benchmarks: scripts that print numbers, each with its baseline measured in the same run."""
