"""Job history: every run recorded in a SQL database (SQLite by default)."""

from sealdump.history.damage import Recovery, recoveries
from sealdump.history.models import Run, RunStatus
from sealdump.history.store import History

__all__ = ["History", "Recovery", "Run", "RunStatus", "recoveries"]
