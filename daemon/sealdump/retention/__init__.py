"""Retention: which backups to keep (pure), and pruning the others from storage."""
