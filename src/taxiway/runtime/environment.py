"""A machine's environment, built as the platform builds it.

Layers, later ones winning: the few host variables a process needs to run at all
(PATH, HOME, locale), for a machine that runs on this host only (a container has its
image's, as on the platform: nothing of the host reaches it), the image's ENV (from the
Dockerfile; a ``${VAR}`` the base image would fill takes the host's value), the plan's
env (``[env]`` plus ``FLY_PROCESS_GROUP`` and ``PRIMARY_REGION``), the app's secrets
(which win over ``[env]``), then the runtime variables the platform sets, which win
over a ``FLY_*`` name the user gave in ``[env]`` or as a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec

#: Host variables passed through so commands resolve and print text as the user expects.
HOST_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME")
LOCAL_REGION = "local"
#: What the plan leaves in the image's ENV where the base image would supply a value.
_BASE_IMAGE_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RuntimeVars(msgspec.Struct, kw_only=True):
    """What the platform tells each machine about itself."""

    app: str
    machine_id: str
    group: str
    region: str
    private_ip: str
    image_ref: str
    version: str
    memory_mb: int
    primary_region: str | None = None

    def as_env(self) -> dict[str, str]:
        env = {
            "FLY_APP_NAME": self.app,
            "FLY_MACHINE_ID": self.machine_id,
            "FLY_ALLOC_ID": self.machine_id,
            "FLY_REGION": self.region,
            "FLY_PROCESS_GROUP": self.group,
            "FLY_PRIVATE_IP": self.private_ip,
            "FLY_IMAGE_REF": self.image_ref,
            "FLY_MACHINE_VERSION": self.version,
            "FLY_VM_MEMORY_MB": str(self.memory_mb),
        }
        if self.primary_region:
            env["PRIMARY_REGION"] = self.primary_region
        return env


def machine_env(
    plan_env: Mapping[str, str],
    secrets: Mapping[str, str],
    runtime: RuntimeVars,
    *,
    image: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    host: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of one machine (``image``: the image's ENV, the plan's
    ``image_env``; ``extra``: e.g. PORT, RELEASE_COMMAND; ``host``: the host variables
    to pass on, this process's by default, ``{}`` for a machine that runs an image)."""
    host_env = os.environ if host is None else host
    env = {k: host_env[k] for k in HOST_PASSTHROUGH if k in host_env}
    base = dict(env)  # the host stands in for the base image the Dockerfile builds on
    for name, value in (image or {}).items():
        env[name] = _BASE_IMAGE_REFERENCE.sub(lambda m: base.get(m.group(1), ""), value)
    env.update(plan_env)
    env.update(secrets)
    env.update(runtime.as_env())
    if extra:
        env.update(extra)
    return env


def region_for(primary_region: str | None) -> str:
    """One host, no regions: machines run in ``primary_region``, or ``local`` without one."""
    return primary_region or LOCAL_REGION


def private_ip(app_seed: int, index: int) -> str:
    """A 6PN-shaped address (``fdaa:…``), unique per machine of the app.

    With the process driver it is a label in the platform's format, not a routable address
    (machines reach each other on 127.0.0.1 and their mapped ports); the namespace driver
    gives each machine a real address.
    """
    return f"fdaa:0:{app_seed & 0xFFFF:x}:a7b:{(index >> 16) & 0xFFFF:x}:{index & 0xFFFF:x}:0:2"
