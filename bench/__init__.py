"""Hangar's benchmarks: one command (`make bench`), side-by-side comparisons in one run, a table, JSON and a chart."""
