"""Model sources: aliases, local / Hub / embedded resolution, and what trb knows per architecture."""
