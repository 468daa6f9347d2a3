"""Restore: choose the objects a request needs, load them into staging, move them into place."""
