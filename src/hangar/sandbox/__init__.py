"""Isolation backends behind one small interface (namespace, process), plus the in-sandbox supervisor."""
