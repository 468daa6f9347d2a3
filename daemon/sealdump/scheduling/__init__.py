"""When jobs run: schedule parsing (pure) and, later, the APScheduler daemon."""
