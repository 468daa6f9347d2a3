"""Telling the outside world how runs go: webhooks (metrics live with the daemon)."""
