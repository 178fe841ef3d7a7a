"""One exception type per kind of user error. The CLI maps them to exit codes, the operator to condition reasons."""

from __future__ import annotations

from hpscan.api.status import Reason


class HPScanError(Exception):
    """Base of every error hpscan reports to a user as one clear message (never a traceback)."""

    exit_code = 1
    reason: str = Reason.ERROR


class ManifestError(HPScanError):
    """A manifest is unreadable or does not describe a valid HPScan; the message names the file and field."""

    exit_code = 2
    reason = Reason.INVALID_SPEC


class PayloadCheckUnavailable(HPScanError):
    """A payload registered a checker of its settings that cannot be loaded here (its packages are missing): the
    scan is refused, never admitted unchecked; the message names the entry point and the cause."""

    reason = Reason.PAYLOAD_CHECK_UNAVAILABLE


class PlanningError(HPScanError):
    """A valid manifest that cannot be planned, e.g. a grid larger than the documented limit."""

    exit_code = 2
    reason = Reason.PLANNING_FAILED


class ResultsError(HPScanError):
    """A results file that cannot be read back (the message names the file and line)."""

    exit_code = 1
    reason = Reason.RESULTS_UNREADABLE


class BackendError(HPScanError):
    """A backend cannot do what was asked with the given site or scan (the message names which)."""

    exit_code = 2
    reason = Reason.BACKEND_ERROR


class SchedulerUnavailable(BackendError):
    """A batch system (e.g. an HTCondor schedd) did not answer; the message names it and the cause."""

    exit_code = 3
    reason = Reason.SCHEDULER_UNAVAILABLE


class CredentialRefused(BackendError):
    """A batch system answered but refused the credential a site names (it could not authenticate it, or the identity
    may not do what was asked); the message names the site, the credential and the batch system's words."""

    exit_code = 2


class ModelsError(HPScanError):
    """A kept model that cannot be listed or fetched (no such run folder, rank or id; a cluster scan's storage)."""

    exit_code = 2
    reason = Reason.ERROR


class ArtifactStoreError(HPScanError):
    """The object store of spec.artifacts.store refused or did not answer; the message names the store, the bucket
    and the cause. ``final``: retrying will not help (a wrong credential, a missing bucket); ``cause``: the store's
    error code (or what went wrong), the same for every object a broken store refuses."""

    exit_code = 1
    reason = Reason.ARTIFACT_STORE_FAILED

    def __init__(self, message: str, final: bool = False, cause: str = "") -> None:
        super().__init__(message)
        self.final = final
        self.cause = cause or message
