"""Deployment of a built repository: what it needs from a container or a pod."""
