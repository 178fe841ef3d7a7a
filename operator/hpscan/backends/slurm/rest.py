"""The thin client of slurmrestd (OpenAPI v0.0.38, Slurm 22.05): four calls over HTTP with a user's JWT. Every
call goes through ``batch_call``: a centre that does not answer is SchedulerUnavailable (the site shows
Unreachable), an answer with errors a BackendError with Slurm's own words."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from hpscan.backends.base import batch_call
from hpscan.backends.slurm.states import SlurmJob
from hpscan.errors import BackendError, SchedulerUnavailable

API = "/slurm/v0.0.38"
INVALID_JOB_ID = 2017
"""ESLURM_INVALID_JOB_ID: slurmctld does not know the job (it ended more than MinJobAge ago, or never was)."""


class SlurmAnswer(Exception):
    """slurmrestd answered with errors (its words in the message)."""

    def __init__(self, message: str, codes: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.codes = codes


def answer_errors(body: dict[str, Any]) -> list[tuple[int, str]]:
    """(error_code, words) of an answer's ``errors`` list."""
    out = []
    for item in body.get("errors") or []:
        words = item.get("description") or item.get("error") or "unknown error"
        if item.get("error") and item.get("error") != words:
            words = f"{words}: {item['error']}"
        out.append((int(item.get("error_code") or item.get("error_number") or item.get("errno") or 0), str(words)))
    return out


class SlurmRest:
    """One user's connection to one slurmrestd (X-SLURM-USER-NAME and X-SLURM-USER-TOKEN on every request)."""

    def __init__(self, url: str, user: str, token: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + API + path, data=data, method=method)
        request.add_header("X-SLURM-USER-NAME", self.user)
        request.add_header("X-SLURM-USER-TOKEN", self.token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:  # slurmrestd answers errors with a JSON body too
            text = error.read()
            if not text.strip():
                raise SlurmAnswer(f"HTTP {error.code} {error.reason}") from None
        answer = json.loads(text or b"{}")
        if answer.get("job_id") is not None:  # submitted: its errors are warnings (e.g. the node is drained now)
            return dict(answer)
        if errors := answer_errors(answer):
            raise SlurmAnswer("; ".join(words for _code, words in errors), frozenset(code for code, _ in errors))
        return dict(answer)

    def call(
        self, what: str, method: str, path: str, body: dict[str, Any] | None = None, unknown_job: Any = None
    ) -> dict[str, Any]:
        """One request; an answer that only says the job is unknown gives ``unknown_job`` when that is a dict."""
        with batch_call(self._failed(what)):
            try:
                return self._request(method, path, body)
            except SlurmAnswer as answer:
                if isinstance(unknown_job, dict) and answer.codes == {INVALID_JOB_ID}:
                    return unknown_job
                raise

    def _failed(self, what: str) -> Callable[[Exception], BackendError]:
        def failed(error: Exception) -> BackendError:
            if isinstance(error, SlurmAnswer):
                return BackendError(f"slurmrestd at {self.url} refused {what}: {error}")
            if isinstance(error, json.JSONDecodeError):
                return SchedulerUnavailable(f"slurmrestd at {self.url} gave no JSON while {what}")
            return SchedulerUnavailable(f"slurmrestd at {self.url} did not answer while {what}: {error}")

        return failed

    def jobs(self) -> list[SlurmJob]:
        """Every job slurmctld holds (running, pending, and ended within MinJobAge)."""
        answer = self.call("listing the jobs", "GET", "/jobs")
        return [SlurmJob.from_rest(entry) for entry in answer.get("jobs") or []]

    def submit(self, body: dict[str, Any]) -> int:
        """Submit one batch job; its id."""
        answer = self.call(f"submitting job {body['job'].get('name')}", "POST", "/job/submit", body)
        return int(answer["job_id"])

    def job(self, job_id: int) -> SlurmJob | None:
        """One job; None when slurmctld no longer knows it."""
        answer = self.call(f"looking for job {job_id}", "GET", f"/job/{job_id}", unknown_job={})
        jobs = answer.get("jobs") or []
        return SlurmJob.from_rest(jobs[0]) if jobs else None

    def cancel(self, job_id: int) -> None:
        """scancel (SIGKILL to every process of the job): one that has ended, or that slurmctld forgot, is not an
        error."""
        self.call(f"cancelling job {job_id}", "DELETE", f"/job/{job_id}", unknown_job={})
