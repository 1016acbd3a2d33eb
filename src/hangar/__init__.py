"""Hangar: a self-hosted runtime for AI agents and tools, wire-compatible with AWS Bedrock AgentCore Runtime."""

__version__ = "0.1.0"
