"""Benchmarks: one place beside cli/; nothing below imports it."""
