"""Whatever bytes arrive, the DNS service neither raises nor says more than one thing:
random packets and mutations of real queries, fed to it in-process (no sockets)."""

from __future__ import annotations

import asyncio
import os

import pytest
from dnslib import DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taxiway.private_net.dns_server import DnsService, Forwarder, SourceRateLimit
from taxiway.private_net.registry import AppEntry, MachineEntry, RegistryView, publish

NAMES = [
    "shop.internal",
    "_instances.internal",
    "vms.shop.internal",
    "top2.nearest.of.shop.internal",
    "primary.role.kv._metadata.shop.internal",
    "shop.flycast",
    "_api.internal",
    "example.com",
]
QUERIES = [
    DNSRecord.question(name, qtype).pack() for name in NAMES for qtype in ("AAAA", "TXT", "ANY")
]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("6pn")
    machine = MachineEntry(
        "aaa111", "web", "local", "fdaa:0:1:a7b:0:1:0:2", "started", metadata={"role": "primary"}
    )
    publish(
        AppEntry("shop", "shop", os.getpid(), "local", [machine], flycast="fdaa::7", api="fdaa::3"),
        folder,
    )
    loop = asyncio.new_event_loop()
    # No resolver: a question for another name gets SERVFAIL at once.
    forwarder = Forwarder(loop, [])
    yield DnsService(RegistryView(folder), forwarder, SourceRateLimit(rate=1e9, burst=1e9))
    loop.close()


def replies_to(service: DnsService, packet: bytes, udp: bool) -> list[bytes]:
    sent: list[bytes] = []
    service.handle(packet, "fdaa:0:1:a7b:0:1:0:2", sent.append, udp)
    return sent


settings_ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings_
@given(packet=st.binary(max_size=600), udp=st.booleans())
def test_random_bytes(service, packet, udp):
    assert len(replies_to(service, packet, udp)) <= 1


@settings_
@given(
    base=st.sampled_from(QUERIES),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 200),
    udp=st.booleans(),
)
def test_mutated_queries(service, base, edits, cut, udp):
    packet = bytearray(base)
    for offset, value in edits:
        if offset < len(packet):
            packet[offset] = value
    packet = bytes(packet[: max(cut, 12)] if cut < len(packet) else packet)
    replies = replies_to(service, packet, udp)
    assert len(replies) <= 1
    if replies:
        reply = DNSRecord.parse(replies[0])  # what it says is a well-formed message
        assert reply.header.qr == 1
        assert reply.header.id == int.from_bytes(packet[:2], "big")
        if udp:
            assert len(replies[0]) <= 1232


LABELS = st.sampled_from(
    [
        "shop",
        "SHOP",
        "nothing",
        "vm",
        "aaa111",
        "zzz",
        "internal",
        "flycast",
        "example",
        "com",
        "_instances",
        "_api",
        "global",
        "top2",
        "nearest",
        "of",
        "kv",
        "_metadata",
        "xé",
    ]
)


@settings_
@given(
    labels=st.lists(LABELS, min_size=1, max_size=5),
    suffix=st.sampled_from(["internal", "Internal", "flycast", "com", ""]),
    qtype=st.sampled_from(["AAAA", "A", "TXT", "ANY", "MX"]),
    flags=st.integers(0, 0xFFFF),
    edns=st.booleans(),
    udp=st.booleans(),
)
def test_the_fast_path_says_what_dnslib_says(
    service, monkeypatch, labels, suffix, qtype, flags, edns, udp
):
    """Forwards and NXDOMAIN skip dnslib; their bytes must be the full path's."""
    from dnslib import EDNS0, DNSLabel

    from taxiway.private_net import dns_server

    name = DNSLabel([label.encode("latin-1") for label in labels] + [suffix.encode()])
    query = DNSRecord.question("x", qtype)
    query.questions[0].qname = name
    query.header.bitmap = flags & ~0x000F  # any flags, opcode included; no rcode
    if edns:
        query.add_ar(EDNS0(udp_len=4096))
    packet = bytes(query.pack())
    fast = replies_to(service, packet, udp)
    with monkeypatch.context() as patch:
        patch.setattr(dns_server, "read_question", lambda data: None)
        service._replies.clear()
        full = replies_to(service, packet, udp)
    assert fast == full
