"""One signed JSON POST to a receiver, retried with backoff: what a webhook delivery does on the wire.

The body is signed with HMAC-SHA256 under the receiver's secret (``X-Memo-Signature-256: sha256=HEX``,
GitHub's scheme), so a receiver can check that memo sent it and that nothing changed it. Attempts
stop at the first 2xx; a 4xx other than 429 is the receiver refusing the message, not failing, and
is not retried. Each attempt is bounded by a timeout, so a receiver that hangs costs seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import httpx

SIGNATURE_HEADER = "X-Memo-Signature-256"
ATTEMPTS = 3  # tries per delivery
BACKOFF_S = 0.5  # wait before the second try, doubled before each later one


@dataclass(frozen=True)
class PostOutcome:
    delivered: bool
    attempts: int
    http_status: int | None  # the last answer's status (None: no answer)
    error: str  # why the last attempt failed ("" when delivered)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


def post(url: str, body: bytes, headers: dict[str, str], *, secret: str | None, timeout: float) -> PostOutcome:
    """POST ``body`` (JSON) to ``url`` up to :data:`ATTEMPTS` times, signed when ``secret`` is given."""
    sent = {"Content-Type": "application/json", **headers}
    if secret is not None:
        sent[SIGNATURE_HEADER] = signature(secret, body)
    status: int | None = None
    error = ""
    for attempt in range(1, ATTEMPTS + 1):
        if attempt > 1:
            time.sleep(BACKOFF_S * 2 ** (attempt - 2))
        try:
            response = httpx.post(url, content=body, headers=sent, timeout=timeout, follow_redirects=False)
        except httpx.TimeoutException:
            status, error = None, f"no answer within {timeout:g} s"
            continue
        except httpx.HTTPError as e:
            status, error = None, f"{type(e).__name__}: {e}"
            continue
        status = response.status_code
        if 200 <= status < 300:
            return PostOutcome(True, attempt, status, "")
        error = f"HTTP {status}: {response.text[:200]}"
        if not _retryable(status):
            return PostOutcome(False, attempt, status, error)
    return PostOutcome(False, ATTEMPTS, status, error)
