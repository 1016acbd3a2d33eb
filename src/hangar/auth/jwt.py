"""Placeholder until the JWT authorizer lands."""

from __future__ import annotations


class JwtAuthorizer:
    pass
