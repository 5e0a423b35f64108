"""What `taxiway up -d`'s command and the daemon it forked say to each other.

A light module: the command imports it as soon as the config is checked, and nothing
here needs the state store or an event loop. The command sends the checked config
(`send_config`); unless the daemon launches its machines first (`may_launch_first`),
the command then settles the start-up and hands it over with the app's lock
(`hand_over`). The protocol is `taxiway.daemon_fork`'s.
"""

from __future__ import annotations

import os
import socket

from taxiway.config.model import AppConfig


def may_launch_first(config: AppConfig, driver: str, has_image: bool = False) -> bool:
    """Whether `up -d`'s daemon may launch the app's machines before it imports asyncio
    (`taxiway.runtime.early`): nothing must be up before them (no release_command; no
    services, statics or top-level checks, whose listeners and state `up -d` reports)
    and the process driver may be the one (`auto` settles on it in the daemon; an app
    with an image, ``has_image``, may get the docker driver)."""
    deploy = config.deploy
    return (
        (driver == "process" or (driver == "auto" and not has_image))
        and not (deploy is not None and deploy.release_command)
        and not config.services
        and config.http_service is None
        and not config.statics
        and not config.checks
    )


# -- the channel between `up -d`'s command and the daemon it forked -----------------------


def send_config(channel: socket.socket, payload: bytes) -> None:
    """Send the daemon the checked config (pickled, with its paths and how to start)."""
    channel.sendall(len(payload).to_bytes(8, "big") + payload)


def receive_config(channel: socket.socket) -> bytes | None:
    """What `send_config` sent; None when the command sent nothing (the config had
    errors, or the app already runs) or died while sending."""
    header = _receive_exactly(channel, 8)
    if header is None:
        return None
    return _receive_exactly(channel, int.from_bytes(header, "big"))


def _receive_exactly(channel: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = channel.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def hand_over(channel: socket.socket, payload: bytes, lock_fd: int) -> None:
    """Send the daemon ``payload`` (the pickled `StartUp`) and the lock, then close the
    channel. The lock's descriptor travels as SCM_RIGHTS, so the daemon holds the very
    lock this process took (flock belongs to the open file, not to a process)."""
    with channel:
        socket.send_fds(channel, [b"L"], [lock_fd])
        channel.sendall(payload)


def take_over(channel: socket.socket) -> tuple[bytes, int] | None:
    """What `hand_over` sent: the payload, and this process's descriptor of the lock;
    None when the command sent nothing (it could not settle the start-up)."""
    _, fds, _, _ = socket.recv_fds(channel, 1, 1)
    chunks = []
    while chunk := channel.recv(1 << 20):
        chunks.append(chunk)
    if not fds:
        return None
    if not chunks:  # the command died while sending
        os.close(fds[0])
        return None
    # Received descriptors are inheritable: a machine must never hold the lock (it would
    # outlive a killed daemon and keep the next one out).
    os.set_inheritable(fds[0], False)
    return b"".join(chunks), fds[0]
