"""HTTP calls to the marketplace's REST API with a personal access token."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urljoin

# Exit codes of the command (see README.md).
EXIT_FILES_WRONG = 1
EXIT_ACCESS = 2
EXIT_DISK_FULL = 3
EXIT_OTHER = 4


class ClientError(Exception):
    """An error with a message for the user and the exit code it ends the command with."""

    exit_code = EXIT_OTHER

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class AccessError(ClientError):
    """The token is unknown, expired, revoked or lacks a scope; the order is not the
    token's user's; the delivery is view-only."""

    exit_code = EXIT_ACCESS


class NotFoundError(ClientError):
    exit_code = EXIT_ACCESS


class DiskFullError(ClientError):
    exit_code = EXIT_DISK_FULL


class Api:
    def __init__(self, base_url: str, token: str, *, timeout: float = 60) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener()

    def _request(self, url: str, *, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> urllib.request.Request:
        request = urllib.request.Request(urljoin(self.base_url, url), data=data, headers=headers or {})
        request.add_header("User-Agent", "marketplace-client/0.1")
        # Not sent on after a redirect: an S3 presigned URL carries its own credentials and
        # would refuse a second kind.
        request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        return request

    def get(self, path: str) -> Any:
        return self._json(self._request(path, headers={"Accept": "application/json"}))

    def post(self, path: str, body: Any) -> Any:
        request = self._request(path, data=json.dumps(body).encode(),
                                headers={"Content-Type": "application/json", "Accept": "application/json"})
        return self._json(request)

    def _json(self, request: urllib.request.Request) -> Any:
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise error_from(exc) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach {self.base_url}: {exc.reason}") from None

    def open(self, url: str, headers: dict[str, str] | None = None) -> Any:
        """A streaming response for a download URL (HTTPError is the caller's to handle)."""
        return self._opener.open(self._request(url, headers=headers), timeout=self.timeout)


def error_from(exc: urllib.error.HTTPError) -> ClientError:
    """The server's {"message", "code"} answer as the matching error."""
    try:
        body = json.loads(exc.read().decode("utf-8"))
        message, code = str(body.get("message") or exc.reason), str(body.get("code") or "")
    except (ValueError, AttributeError, OSError):
        message, code = f"HTTP {exc.code} {exc.reason}", ""
    kind = {401: AccessError, 403: AccessError, 404: NotFoundError}.get(exc.code, ClientError)
    return kind(message, status=exc.code, code=code)
