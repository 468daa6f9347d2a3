"""sealdump's two C extensions; everything else is in pyproject.toml.

Both are optional: where one cannot be built, the backup does the same work another way and
writes the same bytes.

- ``_rowscan`` (needs a C compiler): without it the server formats each value (slower,
  twice the server's CPU; see daemon/sealdump/backup/rowscan.py).
- ``_multiset`` (needs OpenSSL's headers, Debian's libssl-dev; links libcrypto, on Debian
  and in the container the one Python's ssl module uses): without it a keyless table's
  per-row hashes are taken in Python (about 1.7 us per row with the GIL held; see
  daemon/sealdump/backup/chunks.py).
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"]

setup(
    ext_modules=[
        Extension(
            "sealdump.backup._rowscan",
            ["daemon/sealdump/backup/_rowscan.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        Extension(
            "sealdump.backup._multiset",
            ["daemon/sealdump/backup/_multiset.c"],
            extra_compile_args=FLAGS,
            libraries=["crypto"],
            optional=True,
        ),
    ]
)
