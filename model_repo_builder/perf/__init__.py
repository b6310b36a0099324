"""Measurement: perf_analyzer runs, load profiles and capacity analysis."""
