"""Observability: Prometheus metrics (``metrics.py``), wired into ``Services`` by ``setup.py``."""
