"""The MySQL side: verified-TLS connections, server flavour differences, and the catalog."""
