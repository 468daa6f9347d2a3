"""Real services for tests and the demo: TLS MariaDB, Azurite over HTTPS, a Key Vault stand-in.

Plain Python with no pytest dependency, so ``scripts/demo`` starts the same servers the
test fixtures do.
"""
