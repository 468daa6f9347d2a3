"""Binary-log capture for point-in-time recovery: raw events of whole transactions, sealed
into encrypted, chained segments with a durable checkpoint (docs/format.md, section 9).

An engine: it imports archive, keys, storage, source and config, never history,
monitoring, actions, scheduling or cli. Events are stored as the server sent them and
decoded only as far as needed to group them into transactions, index them and refuse what
a later replay could not reproduce faithfully.
"""
