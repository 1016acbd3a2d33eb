"""Inbound authentication: SigV4 verification and the JWT authorizer."""
