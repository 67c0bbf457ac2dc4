"""Errors a person can act on; the app turns them into JSON 4xx responses."""


class LoupeError(Exception):
    status_code = 400

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
