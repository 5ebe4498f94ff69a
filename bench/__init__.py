"""Benchmarks (``make bench``): measured, never asserted."""
