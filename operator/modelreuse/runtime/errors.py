"""Errors a workload reports: a CamelCase reason code and one sentence a user can act on.

Workloads raise ``WorkloadError``; the command line turns it into a result JSON and an exit code, never a
bare traceback. Add reason codes here, next to their exit code, rather than inventing them in place.
"""

from __future__ import annotations

# reason -> process exit code. 1 is kept for unexpected crashes.
EXIT_CODES: dict[str, int] = {
    "InvalidTask": 2,
    "DigestMismatch": 3,
    "UnreadableUri": 4,
    "CorruptModel": 5,
    "UnsupportedModel": 6,
    "ModelInputMismatch": 7,
    "MissingColumns": 8,
    "EmptyData": 9,
    "InvalidFeatures": 10,
    "UnknownLabels": 11,
    "TooFewRows": 12,
    "UnsupportedStrategy": 13,
    "TimeBudgetExceeded": 14,
    "InvalidData": 15,
    "ModelOutputMismatch": 16,
    "UnwritableUri": 17,
    "ExportMismatch": 18,
    "DeviceUnavailable": 19,
}


class WorkloadError(Exception):
    """A failure with a reason code and a sentence that tells the user what to do."""

    def __init__(self, reason: str, message: str):
        if reason not in EXIT_CODES:
            raise ValueError(f"unknown reason code {reason!r}; add it to modelreuse.runtime.errors.EXIT_CODES")
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]


def describe_invalid(exc: Exception) -> str:
    """The first problem of a pydantic ValidationError as ``field.path: message`` (else ``str(exc)``)."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        err = errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        text = err.get("msg", str(exc)).removeprefix("Value error, ")
        return f"{where}: {text}" if where else text
    return str(exc)


def invalid_task(command: str, exc: Exception) -> WorkloadError:
    """The InvalidTask error every workload command reports for a task its pydantic model refuses."""
    return WorkloadError("InvalidTask", f"The {command} task is invalid ({describe_invalid(exc)}); fix it and run again.")
