"""sealdump: encrypted, restorable MySQL backups, scheduled by a daemon.

The package reads as the flow of a backup: ``config`` -> ``scheduling`` -> backup engine ->
archive format and keys -> storage, with ``history`` recording every run and ``cli`` on top.
"""

__version__ = "0.1.0"
