"""Responses the edge writes itself: error pages, redirects, ``100 Continue``.

An error page names the app, the status and the reason in one sentence, with the
platform's error code where there is one (PR01 "no healthy machines", PC07 "connection
retries exhausted", …), as HTML for browsers and plain text for everything else.
"""

from __future__ import annotations

from html import escape
from http import HTTPStatus

from taxiway.edge.headers import SERVER

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>``; the edge writes the standard phrase, as the platform's
    proxy does, whatever the machine said."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


STATUS_LINES = {int(s): status_line(int(s)) for s in HTTPStatus}


def error_body(app: str, status: int, reason: str, *, html: bool) -> tuple[bytes, bytes]:
    """(content type, body) of the page for ``status``."""
    phrase = HTTPStatus(status).phrase
    if not html:
        return b"text/plain; charset=utf-8", f"{status} {phrase}: {app}: {reason}\n".encode()
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{status} {escape(phrase)}</title></head>\n"
        f"<body><h1>{status} {escape(phrase)}</h1>\n"
        f"<p>{escape(app)}: {escape(reason)}</p>\n"
        "<p><small>taxiway edge</small></p></body></html>\n"
    )
    return b"text/html; charset=utf-8", page.encode()


def error_response(
    app: str,
    status: int,
    reason: str,
    *,
    html: bool = False,
    head: bool = False,
    close: bool = False,
    tail: bytes = b"",
) -> bytes:
    """A whole response: status line, headers (``tail`` is the edge's own), the page."""
    ctype, body = error_body(app, status, reason, html=html)
    parts = [
        status_line(status),
        b"Content-Type: " + ctype + b"\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Cache-Control: no-store\r\n",
    ]
    if not tail:
        parts.append(b"Server: " + SERVER + b"\r\n")
    if close:
        parts.append(b"Connection: close\r\n")
    parts += [tail, b"\r\n"]
    if not head:
        parts.append(body)
    return b"".join(parts)


def redirect_response(
    location: bytes, status: int = 301, *, head: bool = False, tail: bytes = b""
) -> bytes:
    """``force_https``'s redirect (the platform answers 301)."""
    body = b"Redirecting to " + location + b"\n"
    return b"".join(
        [
            status_line(status),
            b"Location: " + location + b"\r\n",
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % len(body),
            tail,
            b"\r\n",
            b"" if head else body,
        ]
    )
