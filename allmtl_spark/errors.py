"""Errors a user can act on. The CLI prints their message and exits with code 3."""


class AllmtlError(RuntimeError):
    """Base class: something outside the code (data, storage, artifacts) stops the job."""


class SourceError(AllmtlError):
    """A source cannot be read at all (missing folder, malformed manifest)."""


class LakehouseError(AllmtlError):
    """The lakehouse cannot be used (unwritable folder, missing table)."""


class ArtifactError(AllmtlError):
    """A model artifact is missing, corrupted (hash mismatch) or does not fit the config."""


class TrackingError(AllmtlError):
    """MLflow tracking is required (``tracking.required``) and cannot start or log; the message says what to fix."""


UNUSABLE_ERRORS = (AllmtlError,)


class LeakageError(AllmtlError):
    """A patient or slide would be on two sides of a split, or in two stages that must not share it."""
