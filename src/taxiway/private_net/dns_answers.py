"""What the private network's DNS says about a name: pure logic over the published apps.

The names are the platform's (https://fly.io/docs/networking/private-networking/, its
table of `.internal` names; https://fly.io/docs/networking/flycast/ for `.flycast`):

- AAAA ``<app>.internal`` and ``global.<app>.internal``: every started machine of the app;
  ``<region>.<app>.internal``, ``<machine_id>.vm.<app>.internal``,
  ``<group>.process.<app>.internal``, ``<value>.<key>.kv._metadata.<app>.internal``: the
  started machines among those; ``top<N>.nearest.of.<app>.internal``: the N nearest, and
  on one host all are equally near, so the first N in machine id order.
- TXT ``vms.<app>.internal`` (``"<id> <region>"`` items joined by commas) and
  ``regions.<app>.internal``: of started machines; the ``all.`` forms count stopped ones
  too. ``_apps.internal``: every app's name. ``_instances.internal``:
  ``instance=<id>,app=<app>,ip=<6pn>,region=<region>`` items joined by semicolons, the
  shape the platform's server prints (``all._instances.internal`` adds stopped machines).
  A TXT value longer than one DNS string (255 bytes) is cut into several strings of one
  record; a client joins them back. An empty list is no record at all (NOERROR, no answer).
- AAAA ``<app>.flycast``: the app's flycast address whatever its machines' states (the
  proxy behind it starts a machine); ``_api.internal``: the Machines API address of the
  asking machine's app, found by its source address. A query from the host itself (no
  machine has its address) gets the first app's, in name order, that publishes one: every
  daemon's API manages only its own app, and the host can address each daemon directly.

Only started machines appear in addresses, as on the platform; machines that are not
``registered`` (release command, console, check machines) appear nowhere. A name no app
or machine makes is NXDOMAIN; a name that exists asked for another type (A of
``<app>.internal``) is NOERROR with no answer, as an authoritative server says. Neither
carries an SOA, so no resolver caches the absence (RFC 2308): a machine that starts is
seen at once. Every other name is not ours: `respond` returns None and the server
forwards it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec
from dnslib import AAAA, QTYPE, RCODE, RR, TXT, DNSHeader, DNSRecord

from taxiway.private_net.registry import AppEntry, MachineEntry

TTL = 5
STARTED = "started"
#: States of machines that no longer exist for DNS, even in the ``all.`` lists.
GONE = frozenset({"destroying", "destroyed"})
#: The suffixes this server answers for alone, never forwarded.
OWN_SUFFIXES = ("internal", "flycast")
TXT_STRING_BYTES = 255
OPCODE_QUERY = 0
CLASS_IN = 1
CLASS_ANY = 255


class Lookup(NamedTuple):
    """What a name holds: whether it exists at all, its addresses, its TXT value."""

    exists: bool
    addresses: tuple[str, ...] = ()
    text: str | None = None


NXDOMAIN = Lookup(exists=False)
EMPTY = Lookup(exists=True)


class _App:
    """One app name's machines (several daemons may publish the same name: they merge)."""

    def __init__(self, name: str):
        self.name = name
        self.machines: list[MachineEntry] = []
        self.flycast: str | None = None
        self.api: str | None = None

    def started(self) -> list[MachineEntry]:
        return [m for m in self.machines if m.state == STARTED]

    def listed(self) -> list[MachineEntry]:
        return [m for m in self.machines if m.state not in GONE]


def _ipv6(text: str | None) -> str | None:
    """``text`` as a canonical IPv6 literal, or None when it isn't one (a bad entry
    must not break the answers of every other app)."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.compressed if address.version == 6 else None


def _addresses(machines: Iterable[MachineEntry]) -> tuple[str, ...]:
    return tuple(m.private_ip for m in machines if m.state == STARTED)


class Zone:
    """The published apps indexed for lookups; build one per registry change."""

    def __init__(self, entries: Sequence[AppEntry]):
        self.apps: dict[str, _App] = {}
        self._app_of_ip: dict[str, _App] = {}
        self._rdata: dict[str, AAAA] = {}
        for entry in sorted(entries, key=lambda e: (e.app, e.scope)):
            key = entry.app.lower()
            app = self.apps.get(key)
            if app is None:
                app = self.apps[key] = _App(entry.app)
            app.flycast = app.flycast or _ipv6(entry.flycast)
            app.api = app.api or _ipv6(entry.api)
            for machine in entry.machines:
                address = _ipv6(machine.private_ip)
                if address is None or not machine.registered:
                    continue
                if address != machine.private_ip:
                    machine = msgspec.structs.replace(machine, private_ip=address)
                app.machines.append(machine)
                self._app_of_ip[address] = app
        for app in self.apps.values():
            app.machines.sort(key=lambda m: m.id)

    def rdata(self, address: str) -> AAAA:
        """``address``'s record data, built once per zone (dnslib's parse of an IPv6
        literal costs more than the rest of an answer)."""
        found = self._rdata.get(address)
        if found is None:
            found = self._rdata[address] = AAAA(address)
        return found

    # -- names --------------------------------------------------------------------------

    def lookup(self, name: str, asker: str | None = None) -> Lookup | None:
        """What ``name`` holds, or None when it isn't under our suffixes (forward it).
        ``asker``: the query's source address (for ``_api.internal``)."""
        labels = name.lower().rstrip(".").split(".")
        suffix = labels[-1]
        if suffix not in OWN_SUFFIXES:
            return None
        rest = labels[:-1]
        if suffix == "flycast":
            app = self.apps.get(rest[0]) if len(rest) == 1 else None
            if app is None:
                return NXDOMAIN
            return Lookup(True, (app.flycast,) if app.flycast else ())
        if not rest:
            return EMPTY  # "internal." itself: it has names under it, no records
        if len(rest) <= 2 and rest[-1].startswith("_"):
            return self._organisation(rest, asker)
        app = self.apps.get(rest[-1])
        if app is None:
            return NXDOMAIN
        return self._app_name(app, rest[:-1])

    def _organisation(self, rest: list[str], asker: str | None) -> Lookup:
        if rest == ["_apps"]:
            return Lookup(True, text=",".join(app.name for app in self.apps.values()))
        if rest in (["_instances"], ["all", "_instances"]):
            every = rest[0] == "all"
            items = [
                f"instance={m.id},app={app.name},ip={m.private_ip},region={m.region}"
                for app in self.apps.values()
                for m in (app.listed() if every else app.started())
            ]
            return Lookup(True, text=";".join(items))
        if rest == ["_api"]:
            address = self._api_for(asker)
            return Lookup(True, (address,)) if address else NXDOMAIN
        return NXDOMAIN

    def _api_for(self, asker: str | None) -> str | None:
        app = self._app_of_ip.get(_ipv6(_unmapped(asker)) or "") if asker else None
        if app is not None and app.api:
            return app.api
        return next((a.api for a in self.apps.values() if a.api), None)

    def _app_name(self, app: _App, sub: list[str]) -> Lookup:
        machines = app.machines
        if not sub or sub == ["global"]:
            return Lookup(True, _addresses(machines))
        if sub in (["vms"], ["all", "vms"]):
            chosen = app.listed() if sub[0] == "all" else app.started()
            return Lookup(True, text=",".join(f"{m.id} {m.region}" for m in chosen))
        if sub in (["regions"], ["all", "regions"]):
            chosen = app.listed() if sub[0] == "all" else app.started()
            return Lookup(True, text=",".join(sorted({m.region for m in chosen})))
        if len(sub) == 2 and sub[1] == "vm":
            return _subset([m for m in machines if m.id.lower() == sub[0]])
        if len(sub) == 2 and sub[1] == "process":
            return _subset([m for m in machines if m.group.lower() == sub[0]])
        if len(sub) == 3 and sub[1:] == ["nearest", "of"]:
            count = _top_count(sub[0])
            if count is None:
                return NXDOMAIN
            return Lookup(True, _addresses(machines)[:count])
        if len(sub) == 4 and sub[2:] == ["kv", "_metadata"]:
            value, key = sub[0], sub[1]
            return _subset([m for m in machines if _metadata_matches(m, key, value)])
        if len(sub) == 1:
            return _subset([m for m in machines if m.region.lower() == sub[0]])
        return NXDOMAIN


def _subset(machines: list[MachineEntry]) -> Lookup:
    """A name that picks machines exists while it picks any (started or not)."""
    return Lookup(True, _addresses(machines)) if machines else NXDOMAIN


def _top_count(label: str) -> int | None:
    digits = label[3:] if label.startswith("top") else ""
    if not digits.isdigit() or not digits.isascii() or int(digits) < 1:
        return None
    return int(digits)


def _metadata_matches(machine: MachineEntry, key: str, value: str) -> bool:
    """DNS names are case-insensitive, so the key and value are compared that way."""
    return any(k.lower() == key and v.lower() == value for k, v in machine.metadata.items())


def _unmapped(address: str | None) -> str | None:
    """An IPv4-mapped source (``::ffff:a.b.c.d``, a dual-stack socket) as the IPv4 it is."""
    if address and address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address


def txt_strings(value: str) -> list[bytes]:
    """``value`` cut into DNS character-strings (at most 255 bytes each)."""
    raw = value.encode()
    if not raw:
        return [b""]
    return [raw[i : i + TXT_STRING_BYTES] for i in range(0, len(raw), TXT_STRING_BYTES)]


def is_own_name(name: str) -> bool:
    """Whether ``name`` is under a suffix only this server answers (never forwarded)."""
    return name.lower().rstrip(".").rsplit(".", 1)[-1] in OWN_SUFFIXES


def respond(request: DNSRecord, zone: Zone, asker: str | None = None) -> DNSRecord | None:
    """The reply to ``request``, or None when its name is not ours (forward it).

    A request that isn't a plain query of one question gets NOTIMP or FORMERR."""
    if request.header.opcode != OPCODE_QUERY:
        return _error(request, RCODE.NOTIMP)
    if len(request.questions) != 1:
        return _error(request, RCODE.FORMERR)
    question = request.questions[0]
    qname = question.qname
    try:
        name = b".".join(qname.label).decode("ascii")
    except UnicodeDecodeError:
        if not _own_raw(qname.label):
            return None
        reply = request.reply(ra=1, aa=1)
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    found = zone.lookup(name, asker)
    if found is None:
        return None
    reply = request.reply(ra=1, aa=1)
    if not found.exists:
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    if question.qclass not in (CLASS_IN, CLASS_ANY):
        return reply
    qtype = question.qtype
    answers = []
    if qtype in (QTYPE.AAAA, QTYPE.ANY):
        answers += [
            RR(qname, QTYPE.AAAA, rdata=zone.rdata(address), ttl=TTL) for address in found.addresses
        ]
    if qtype in (QTYPE.TXT, QTYPE.ANY) and found.text:
        answers.append(RR(qname, QTYPE.TXT, rdata=TXT(txt_strings(found.text)), ttl=TTL))
    if answers:
        reply.add_answer(*answers)  # at once: dnslib recounts the sections per call
    return reply


def _own_raw(labels: Sequence[bytes]) -> bool:
    return bool(labels) and labels[-1].lower().decode("latin-1") in OWN_SUFFIXES


def _error(request: DNSRecord, rcode: int) -> DNSRecord:
    """A reply with no question section: the request's may be the thing that is wrong."""
    header = DNSHeader(id=request.header.id, bitmap=request.header.bitmap, qr=1, ra=1, aa=0)
    header.rcode = rcode
    return DNSRecord(header)
