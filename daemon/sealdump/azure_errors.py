"""What an Azure SDK error means, shared by the Blob storage and the Key Vault key provider.

azure-core wraps the transport's exceptions several layers deep (``inner_exception``,
``__cause__``), so whether a call timed out cannot be read off the outer exception alone.
"""

from __future__ import annotations

from azure.core.exceptions import ServiceRequestTimeoutError, ServiceResponseTimeoutError


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it wraps, is a connect or read timeout."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(
            seen, ServiceRequestTimeoutError | ServiceResponseTimeoutError | TimeoutError
        ):
            return True
        if "timed out" in str(seen).lower():
            return True
        inner = getattr(seen, "inner_exception", None)
        seen = inner if isinstance(inner, BaseException) else (seen.__cause__ or seen.__context__)
    return False
