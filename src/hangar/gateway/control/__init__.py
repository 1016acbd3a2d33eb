"""Control-plane routes of ``bedrock-agentcore-control`` (runtimes, versions, endpoints, tags).

Paths and trailing slashes are exactly those boto3 and the aws CLI send; each handler parses the request into
a command (``hangar.control.commands``), runs it, and renders the answer.
"""

from hangar.gateway.control import endpoints, resource_policies, runtimes, tags

ROUTES = [*runtimes.ROUTES, *endpoints.ROUTES, *tags.ROUTES, *resource_policies.ROUTES]
