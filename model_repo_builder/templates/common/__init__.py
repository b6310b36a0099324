"""The runtime every served template imports (copied into each repository)."""
