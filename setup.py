"""The one C extension (sealdump.backup._rowscan); everything else is in pyproject.toml.

The extension is optional: where it cannot be built, backups let the server format each
value (slower, twice the server's CPU, same bytes; see daemon/sealdump/backup/rowscan.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sealdump.backup._rowscan",
            ["daemon/sealdump/backup/_rowscan.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"],
            optional=True,
        )
    ]
)
