"""The archive format: how every stored object is compressed, encrypted and authenticated.

``format`` is the object format of docs/format.md (pure, streaming); ``envelope`` is the
per-backup data-key envelope that key rotation rewrites without touching data objects.
"""
