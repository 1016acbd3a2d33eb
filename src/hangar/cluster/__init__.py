"""Multi-node Hangar through Ray: nodes (sandbox hosts) and the gateway's view of them (docs/cluster.md).

Ray is imported only inside this package and only lazily: a server without the ``cluster`` extra never loads it.
"""
