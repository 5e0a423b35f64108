"""The daemon's part in the private network: its app's entry in the host's registry,
a DNS server, and the host's addresses for the app.

Every daemon publishes its app's machines (`taxiway.private_net.registry`) whenever one
changes, and withdraws them when it stops; a DNS server reads every app's entries, so
whichever daemon's server answers (they share ``[fdaa::3]:53``), the answer is the
whole network's. A daemon whose driver gives machines a network of their own
(namespace, docker) on a host that can carry the network (root, Linux) also holds the
DNS server's and its app's addresses on the host and runs a DNS server as a child
process, so that a flood of queries costs the edge, in this process, nothing. The
process driver's machines share the host's network and its resolver: they are listed
(``_apps.internal``, ``vms.<app>.internal``), but their ``FLY_PRIVATE_IP`` is a label.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from taxiway.errors import TaxiwayError
from taxiway.private_net import addresses, host
from taxiway.runtime.scope import seed

if TYPE_CHECKING:
    from taxiway.private_net.dns_server import DnsProcess
    from taxiway.runtime.app import AppRuntime

#: Metadata that keeps a machine out of the ``.internal`` names: flyctl registers no
#: DNS name for machine-check and canary machines (``internal/appconfig/machines.go``,
#: ``dns.skip_registration``); release and console machines are one-offs, never listed.
UNREGISTERED_METADATA = ("fly_test_subject", "fly_canary")


class PrivateNetSlot:
    """Started before the machines (their resolver must answer from their first
    query), closed after them."""

    def __init__(self, runtime: AppRuntime, say: Callable[[str], None] = print) -> None:
        self.runtime = runtime
        self.say = say
        app_seed = seed(runtime.scope)
        self.flycast = addresses.flycast_address(app_seed)
        self.api = addresses.api_address(app_seed)
        #: Why the network's names don't reach this app's machines (None: they do).
        self.reason: str | None = None
        self.dns: DnsProcess | None = None
        self._publish_pending = False

    async def start(self) -> None:
        runtime = self.runtime
        runtime.on_change.append(self._changed)
        if not runtime.driver.own_network:
            self.reason = (
                f"the {runtime.driver.name} driver's machines share the host's network "
                "(--driver namespace or docker gives them the private network)"
            )
        elif (missing := host.unavailable_reason()) is not None:
            self.reason = f"the private network needs {missing}"
        else:
            self.reason = self._hold_addresses()  # ~30 ms, once, before any machine
            if self.reason is None:
                await self._start_dns()
            if self.reason is not None:
                self.say(f"private network: no .internal names or flycast: {self.reason}")
            else:
                runtime.flycast_address = self.flycast
                runtime.driver.machine_resolv_conf = host.write_resolv_conf()
                forwarding = host.forwarding_reason()
                if forwarding is not None:
                    self.say(f"private network: other apps' machines need {forwarding}")
        self._publish()

    def _hold_addresses(self) -> str | None:
        """The host's addresses for the network and the app, its entry published first
        (under the host-wide lock: a stopping last app then leaves the shared ones)."""
        wanted = [addresses.DNS_ADDRESS, self.flycast, self.api]
        try:
            with host.shared_lock():
                self._publish()
                return host.add_addresses(wanted) or host.allow_between_apps()
        except (OSError, TaxiwayError) as exc:
            return f"the private network's lock: {exc}"

    async def _start_dns(self) -> None:
        from taxiway.private_net.dns_server import start_dns

        try:
            self.dns = await asyncio.to_thread(
                start_dns, [(addresses.DNS_ADDRESS, addresses.DNS_PORT)]
            )
        except TaxiwayError as exc:
            self.reason = str(exc)

    def api_listeners(self) -> list[tuple[str, int]]:
        """Where the app's Machines API listens for its machines (``_api.internal``)."""
        return [] if self.reason is not None else [(self.api, addresses.API_PORT)]

    def network_facts(self) -> dict[str, object]:
        """What `status --json` says about the private network."""
        if self.reason is not None:
            return {"dns": None, "flycast": None, "unavailable": self.reason}
        return {"dns": f"[{addresses.DNS_ADDRESS}]:{addresses.DNS_PORT}", "flycast": self.flycast}

    # -- the registry -------------------------------------------------------------------

    def _changed(self) -> None:
        """Coalesce a burst of changes (a deploy's) into one write at the loop's next turn."""
        if self._publish_pending:
            return
        self._publish_pending = True
        asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        from taxiway.private_net import registry

        self._publish_pending = False
        runtime = self.runtime
        metadata = {r.id: r.metadata for r in runtime.store.list_machines(runtime.app)}
        machines = []
        for machine in runtime.machines.values():
            info = machine.info
            tags = metadata.get(info.id, {})
            machines.append(
                registry.MachineEntry(
                    id=info.id,
                    group=info.group,
                    region=info.region,
                    private_ip=info.private_ip,
                    state=info.state.value,
                    registered=not any(tags.get(key) for key in UNREGISTERED_METADATA),
                    metadata=dict(tags),
                )
            )
        with contextlib.suppress(OSError, TaxiwayError):  # names go stale, machines run on
            registry.publish(
                registry.AppEntry(
                    app=runtime.app,
                    scope=runtime.scope,
                    pid=os.getpid(),
                    region=runtime.region,
                    machines=machines,
                    flycast=self.flycast if self.reason is None else None,
                    api=self.api if self.reason is None else None,
                )
            )

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.runtime.on_change.remove(self._changed)
        if self.dns is not None:
            await asyncio.to_thread(self.dns.stop)
        await asyncio.to_thread(host.release_scope, self.runtime.scope)
