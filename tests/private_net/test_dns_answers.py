"""What the private network's DNS answers for each name form, from published apps alone
(no sockets): started and registered machines only, NXDOMAIN vs NODATA, TXT strings."""

from __future__ import annotations

import pytest
from dnslib import QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord

from taxiway.private_net.dns_answers import TTL, Zone, respond, txt_strings
from taxiway.private_net.registry import AppEntry, MachineEntry

WEB1 = MachineEntry("aaa111", "web", "local", "fdaa:0:1:a7b:0:1:0:2", "started")
WEB2 = MachineEntry(
    "bbb222", "web", "local", "fdaa:0:1:a7b:0:2:0:2", "started", metadata={"role": "Primary"}
)
WORKER = MachineEntry("ccc333", "worker", "ams", "fdaa:0:1:a7b:0:3:0:2", "started")
STOPPED = MachineEntry(
    "ddd444", "web", "ord", "fdaa:0:1:a7b:0:4:0:2", "stopped", metadata={"role": "primary"}
)
RELEASE = MachineEntry(
    "eee555", "web", "local", "fdaa:0:1:a7b:0:5:0:2", "started", registered=False
)
SUSPENDED = MachineEntry("fff666", "worker", "ams", "fdaa:0:1:a7b:0:6:0:2", "suspended")

SHOP = AppEntry(
    "shop",
    "/home/u/shop/.taxiway",
    1,
    "local",
    [WORKER, WEB2, STOPPED, WEB1, RELEASE, SUSPENDED],
    flycast="fdaa:0:1:0::7",
    api="fdaa:0:1::3:4280",
)
DB_MACHINE = MachineEntry("9d0001", "app", "local", "fdaa:0:2:a7b:0:1:0:2", "started")
DB = AppEntry("db", "/srv/db/.taxiway", 2, "local", [DB_MACHINE], api="fdaa:0:2::3:4280")
ASLEEP = AppEntry(
    "asleep",
    "/srv/asleep/.taxiway",
    3,
    "local",
    [MachineEntry("a51eef", "app", "local", "fdaa:0:3:a7b:0:1:0:2", "stopped")],
    flycast="fdaa:0:3:0::7",
)
ZONE = Zone([SHOP, DB, ASLEEP])


def ask(name: str, qtype: str = "AAAA", asker: str | None = None, zone: Zone = ZONE):
    reply = respond(DNSRecord.question(name, qtype), zone, asker)
    assert reply is not None, f"{name} was not answered"
    return reply


def addresses(name: str, asker: str | None = None, zone: Zone = ZONE) -> list[str]:
    reply = ask(name, "AAAA", asker, zone)
    assert reply.header.rcode == RCODE.NOERROR, f"{name}: {RCODE.get(reply.header.rcode)}"
    assert all(rr.rtype == QTYPE.AAAA and rr.ttl == TTL for rr in reply.rr)
    return [str(rr.rdata) for rr in reply.rr]


def text(name: str, zone: Zone = ZONE) -> str:
    """The TXT value, its strings joined back as a client does."""
    reply = ask(name, "TXT", zone=zone)
    assert reply.header.rcode == RCODE.NOERROR
    assert len(reply.rr) == 1 and reply.rr[0].rtype == QTYPE.TXT and reply.rr[0].ttl == TTL
    return b"".join(reply.rr[0].rdata.data).decode()


def test_app_name_and_global_give_every_started_registered_machine_in_id_order():
    expected = [WEB1.private_ip, WEB2.private_ip, WORKER.private_ip]
    assert addresses("shop.internal") == expected
    assert addresses("global.shop.internal") == expected


def test_stopped_suspended_and_unregistered_machines_have_no_address():
    every = addresses("shop.internal")
    for absent in (STOPPED, SUSPENDED, RELEASE):
        assert absent.private_ip not in every


def test_names_are_case_insensitive_and_the_trailing_dot_optional():
    expected = addresses("shop.internal")
    assert addresses("SHOP.Internal.") == expected
    assert addresses("Global.ShOp.INTERNAL") == expected
    assert addresses("AAA111.VM.shop.internal") == [WEB1.private_ip]


def test_the_answer_keeps_the_name_as_asked():
    reply = ask("ShOp.Internal")
    assert str(reply.rr[0].rname) == "ShOp.Internal."


def test_region_names():
    assert addresses("local.shop.internal") == [WEB1.private_ip, WEB2.private_ip]
    assert addresses("ams.shop.internal") == [WORKER.private_ip]
    # ord has only a stopped machine: the name exists, without an address.
    assert addresses("ord.shop.internal") == []
    assert ask("fra.shop.internal").header.rcode == RCODE.NXDOMAIN


def test_machine_names():
    assert addresses("bbb222.vm.shop.internal") == [WEB2.private_ip]
    assert addresses("ddd444.vm.shop.internal") == []  # stopped: known, no address
    assert ask("eee555.vm.shop.internal").header.rcode == RCODE.NXDOMAIN  # unregistered
    assert ask("zzz999.vm.shop.internal").header.rcode == RCODE.NXDOMAIN
    assert ask("aaa111.vm.db.internal").header.rcode == RCODE.NXDOMAIN  # another app's


def test_process_group_names():
    assert addresses("web.process.shop.internal") == [WEB1.private_ip, WEB2.private_ip]
    assert addresses("worker.process.shop.internal") == [WORKER.private_ip]
    assert ask("cron.process.shop.internal").header.rcode == RCODE.NXDOMAIN


def test_nearest_names_take_the_first_started_machines():
    assert addresses("top1.nearest.of.shop.internal") == [WEB1.private_ip]
    assert addresses("top2.nearest.of.shop.internal") == [WEB1.private_ip, WEB2.private_ip]
    assert addresses("top10.nearest.of.shop.internal") == addresses("shop.internal")
    for bad in ("top0", "topx", "top", "top-1", "bottom2"):
        assert ask(f"{bad}.nearest.of.shop.internal").header.rcode == RCODE.NXDOMAIN


def test_metadata_names_match_key_and_value_case_insensitively():
    # WEB2 (started) and STOPPED have role=primary (any case): only WEB2 has an address.
    assert addresses("primary.role.kv._metadata.shop.internal") == [WEB2.private_ip]
    assert addresses("PRIMARY.Role.kv._metadata.shop.internal") == [WEB2.private_ip]
    assert ask("replica.role.kv._metadata.shop.internal").header.rcode == RCODE.NXDOMAIN
    assert ask("primary.tier.kv._metadata.shop.internal").header.rcode == RCODE.NXDOMAIN


def test_vms_lists_started_machines_and_all_vms_stopped_ones_too():
    assert text("vms.shop.internal") == "aaa111 local,bbb222 local,ccc333 ams"
    assert text("all.vms.shop.internal") == (
        "aaa111 local,bbb222 local,ccc333 ams,ddd444 ord,fff666 ams"
    )


def test_regions_lists():
    assert text("regions.shop.internal") == "ams,local"
    assert text("all.regions.shop.internal") == "ams,local,ord"


def test_apps_list_every_published_app_whatever_its_machines():
    assert text("_apps.internal") == "asleep,db,shop"


def test_instances_in_the_platforms_format():
    started = text("_instances.internal").split(";")
    assert started == [
        f"instance=9d0001,app=db,ip={DB_MACHINE.private_ip},region=local",
        f"instance=aaa111,app=shop,ip={WEB1.private_ip},region=local",
        f"instance=bbb222,app=shop,ip={WEB2.private_ip},region=local",
        f"instance=ccc333,app=shop,ip={WORKER.private_ip},region=ams",
    ]
    every = text("all._instances.internal").split(";")
    assert len(every) == 7  # + ddd444 (stopped), fff666 (suspended), a51eef (stopped)
    assert f"instance=ddd444,app=shop,ip={STOPPED.private_ip},region=ord" in every
    assert not any("eee555" in item for item in every)  # never the release machine


def test_a_long_txt_value_is_split_into_strings_of_at_most_255_bytes():
    many = [
        MachineEntry(f"{i:014x}", "app", "local", f"fdaa:0:9:a7b:0:{i:x}:0:2", "started")
        for i in range(40)
    ]
    zone = Zone([AppEntry("big", "big", 1, "local", many)])
    reply = ask("_instances.internal", "TXT", zone=zone)
    strings = reply.rr[0].rdata.data
    assert len(strings) > 1
    assert all(len(s) <= 255 for s in strings)
    joined = b"".join(strings).decode().split(";")
    assert len(joined) == 40 and joined[0].startswith("instance=00000000000000,app=big")
    packed = DNSRecord.parse(reply.pack())  # and it survives the wire
    assert b"".join(packed.rr[0].rdata.data) == b"".join(strings)


def test_txt_strings():
    assert txt_strings("") == [b""]
    assert txt_strings("a" * 255) == [b"a" * 255]
    assert txt_strings("a" * 256) == [b"a" * 255, b"a"]


def test_flycast_answers_whatever_the_machines_states():
    assert addresses("asleep.flycast") == ["fdaa:0:3::7"]
    assert addresses("SHOP.flycast.") == ["fdaa:0:1::7"]
    assert addresses("db.flycast") == []  # the app exists, without a flycast address
    assert ask("nothing.flycast").header.rcode == RCODE.NXDOMAIN
    assert ask("a.shop.flycast").header.rcode == RCODE.NXDOMAIN


def test_api_address_is_the_asking_machines_apps():
    assert addresses("_api.internal", asker=DB_MACHINE.private_ip) == ["fdaa:0:2::3:4280"]
    assert addresses("_api.internal", asker=WEB1.private_ip) == ["fdaa:0:1::3:4280"]
    # The same address written another way is the same machine.
    assert addresses("_api.internal", asker="fdaa:0:2:a7b::1:0:2") == ["fdaa:0:2::3:4280"]


def test_api_address_for_the_host_or_an_app_without_one_is_the_first_apps():
    # In app name order: asleep has no API address, db is next.
    assert addresses("_api.internal", asker="127.0.0.1") == ["fdaa:0:2::3:4280"]
    assert addresses("_api.internal") == ["fdaa:0:2::3:4280"]
    assert addresses("_api.internal", asker="fdaa:0:3:a7b:0:1:0:2") == ["fdaa:0:2::3:4280"]
    assert ask("_api.internal", zone=Zone([ASLEEP])).header.rcode == RCODE.NXDOMAIN


@pytest.mark.parametrize(
    "name",
    [
        "nothing.internal",
        "vm.shop.internal",
        "a.b.c.d.e.shop.internal",
        "_peers.internal",
        "x._apps.internal",
        "kv._metadata.shop.internal",
    ],
)
def test_names_that_match_nothing_are_nxdomain_without_answers(name):
    for qtype in ("AAAA", "A", "TXT"):
        reply = ask(name, qtype)
        assert reply.header.rcode == RCODE.NXDOMAIN
        assert reply.rr == []
        assert reply.header.aa == 1


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("shop.internal", "A"),
        ("shop.internal", "TXT"),
        ("shop.internal", "MX"),
        ("vms.shop.internal", "AAAA"),
        ("_apps.internal", "AAAA"),
        ("shop.flycast", "A"),
        ("aaa111.vm.shop.internal", "A"),
    ],
)
def test_a_known_name_of_another_type_is_nodata(name, qtype):
    reply = ask(name, qtype)
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.rr == []


def test_any_gives_every_record_of_the_name():
    reply = ask("shop.internal", "ANY")
    assert [str(rr.rdata) for rr in reply.rr] == addresses("shop.internal")


def test_an_empty_list_is_nodata():
    zone = Zone([ASLEEP])
    reply = ask("vms.asleep.internal", "TXT", zone=zone)
    assert reply.header.rcode == RCODE.NOERROR and reply.rr == []
    assert ask("_apps.internal", "TXT", zone=Zone([])).rr == []


@pytest.mark.parametrize("name", ["example.com", "internal.example.com", "fly.dev", "."])
def test_other_names_are_forwarded(name):
    assert respond(DNSRecord.question(name, "A"), ZONE) is None


def test_a_reply_mirrors_the_query_id_and_recursion_flag():
    request = DNSRecord.question("shop.internal", "AAAA")
    reply = respond(request, ZONE)
    assert reply.header.id == request.header.id
    assert reply.header.qr == 1 and reply.header.rd == request.header.rd


def test_not_a_query_or_not_one_question():
    notify = DNSRecord(DNSHeader(opcode=4), q=DNSQuestion("shop.internal"))
    assert respond(notify, ZONE).header.rcode == RCODE.NOTIMP
    two = DNSRecord(DNSHeader(), questions=[DNSQuestion("a.internal"), DNSQuestion("b.internal")])
    reply = respond(two, ZONE)
    assert reply.header.rcode == RCODE.FORMERR and reply.questions == []
    assert respond(DNSRecord(DNSHeader()), ZONE).header.rcode == RCODE.FORMERR


def test_apps_of_the_same_name_merge_and_bad_addresses_are_skipped():
    other = AppEntry(
        "shop",
        "/elsewhere/.taxiway",
        9,
        "local",
        [
            MachineEntry("aaa000", "web", "local", "fdaa:0:8:a7b:0:1:0:2", "started"),
            MachineEntry("bad", "web", "local", "not-an-ip", "started"),
            MachineEntry("v4", "web", "local", "10.0.0.1", "started"),
        ],
    )
    zone = Zone([SHOP, other])
    assert addresses("shop.internal", zone=zone)[0] == "fdaa:0:8:a7b:0:1:0:2"
    assert len(addresses("shop.internal", zone=zone)) == 4
    assert text("_apps.internal", zone=zone) == "shop"
    assert ask("bad.vm.shop.internal", zone=zone).header.rcode == RCODE.NXDOMAIN


def test_a_non_ascii_name_under_internal_is_nxdomain_and_elsewhere_forwarded():
    request = DNSRecord.question("shop.internal")
    request.questions[0].qname.label = (b"sh\xffp", b"internal")
    assert respond(request, ZONE).header.rcode == RCODE.NXDOMAIN
    request.questions[0].qname.label = (b"sh\xffp", b"example")
    assert respond(request, ZONE) is None
