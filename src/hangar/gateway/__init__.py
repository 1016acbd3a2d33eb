"""The HTTP face of Hangar: raw-path routing, authentication, AWS-shaped errors, thin handlers."""
