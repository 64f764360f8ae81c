"""The per-route policy chain: one concern per module, run in a fixed order."""
