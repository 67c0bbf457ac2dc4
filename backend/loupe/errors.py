"""Errors a person can act on; the app turns them into JSON 4xx responses."""


class LoupeError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None  # sent with the response (e.g. Retry-After)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(LoupeError):
    status_code = 404


class Unprocessable(LoupeError):
    status_code = 422


class Conflict(LoupeError):
    status_code = 409


class TooLarge(LoupeError):
    status_code = 413


class TooManyRequests(LoupeError):
    """The job queue is full: try again after `retry_after` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}
