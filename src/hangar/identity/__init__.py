"""Outbound identity: workload identities, credential providers, the token vault, workload access tokens and the
OAuth2 flows that fetch resource tokens for agents (AgentCore Identity's model)."""
