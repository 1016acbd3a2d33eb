"""The model and its rules: runtimes, versions, endpoints, sessions. Pure Python, no I/O."""
