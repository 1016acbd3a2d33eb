"""Control-plane use cases: runtimes, versions, endpoints, the CREATING → READY workflow."""
