"""The review app: people verify mined pairs one at a time; decisions persist in SQLite."""
