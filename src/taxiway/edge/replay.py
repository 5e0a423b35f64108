"""``fly-replay``: a machine asks the proxy to deliver the request elsewhere (§2.3).

Locally there is one region (the fleet's) and one app, so the edge can honour
``instance``, ``prefer_instance``, ``elsewhere``, ``state`` and ``fallback``, and a
``region`` list that names this region or ``any``. A target that can't exist here — another
region, another app — gets a **502 Bad Gateway**: the machine asked for something the
proxy can't deliver, the same family of answer the platform gives for a failed replay
(PA03/PA04), and plainly not the app's own response. With ``fallback`` the request goes
back to the issuing machine instead, carrying ``fly-replay-failed`` as on the platform.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

REPLAY_JSON = b"application/vnd.fly.replay+json"


@dataclass(slots=True)
class Replay:
    instance: str | None = None
    prefer_instance: str | None = None
    regions: tuple[str, ...] = ()
    app: str | None = None
    state: str | None = None
    elsewhere: bool = False
    fallback: str | None = None
    timeout_s: float | None = None


def parse_header(value: bytes) -> Replay:
    """``k=v;k="v,w"`` → `Replay`; unknown fields are ignored, as the platform does."""
    fields: dict[str, str] = {}
    for part in value.decode("latin-1").split(";"):
        key, sep, val = part.partition("=")
        if sep:
            fields[key.strip().lower()] = val.strip().strip('"')
    return _from_fields(fields)


def parse_json(body: bytes) -> Replay:
    try:
        data = json.loads(body)
    except ValueError:
        return Replay()
    if not isinstance(data, dict):
        return Replay()
    fields = {str(k).lower(): v for k, v in data.items()}
    if isinstance(fields.get("region"), list):
        fields["region"] = ",".join(str(r) for r in fields["region"])
    return _from_fields({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})


def _from_fields(fields: dict[str, str]) -> Replay:
    regions = tuple(r.strip() for r in fields.get("region", "").split(",") if r.strip())
    return Replay(
        instance=fields.get("instance") or None,
        prefer_instance=fields.get("prefer_instance") or None,
        regions=regions,
        app=fields.get("app") or None,
        state=fields.get("state"),
        elsewhere=fields.get("elsewhere", "").lower() == "true",
        fallback=fields.get("fallback") or None,
        timeout_s=_duration(fields.get("timeout")),
    )


def _duration(text: str | None) -> float | None:
    if not text:
        return None
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * scale
            except ValueError:
                return None
    return None


def region_here(replay: Replay, region: str) -> bool:
    """Whether the ``region`` field (if any) can be served by this host's one region."""
    return not replay.regions or any(r in (region, "any") for r in replay.regions)


def source_header(issuer: str, region: str, state: str | None) -> bytes:
    """``fly-replay-src`` on the replayed request (``t`` in microseconds)."""
    fields = [f"instance={issuer}", f"region={region}", f"t={time.time_ns() // 1000}"]
    if state is not None:
        fields.append(f"state={state}")
    return ("fly-replay-src: " + ";".join(fields) + "\r\n").encode()


def failed_header(replay: Replay, issuer: str, app: str, reason: str, elapsed_ms: int) -> bytes:
    """``fly-replay-failed`` on a fallback delivery to the issuing machine: the target asked
    for, the issuer (``replay_source``), why and how long it took."""
    fields = []
    if replay.instance or replay.prefer_instance:
        fields.append(f"instance={replay.instance or replay.prefer_instance}")
    fields.append(f"app={replay.app or app}")
    if replay.regions:
        fields.append(f"region={','.join(replay.regions)}")
    fields += [f"replay_source={issuer}", f"reason={reason}", f"elapsed_ms={elapsed_ms}"]
    return ("fly-replay-failed: " + ";".join(fields) + "\r\n").encode()
