"""`plan_machines`: what each process group's machines get, as flyctl would build it.

The expectations come from the fly.toml reference (https://fly.io/docs/reference/configuration/) and
from flyctl's own tests of its fixtures (`internal/appconfig/machines_test.go`,
`processgroups_test.go`), which are copied into the shared corpus. Where taxiway fills
in a platform default that flyctl leaves to the platform (a guest size, a restart
policy, a stop config), the tests assert the default taxiway shows.
"""

from __future__ import annotations

import base64
import re
import textwrap
from pathlib import Path

import msgspec
import pytest

from taxiway.config import groups
from taxiway.config.loader import LoadedConfig, load_config
from taxiway.config.source import ConfigFileError
from taxiway.plan.machine import (
    Check,
    Concurrency,
    FileSpec,
    Guest,
    Init,
    MachineSpec,
    MetricsSpec,
    MountSpec,
    Port,
    RestartSpec,
    StaticSpec,
    StopConfig,
    plan_machines,
)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
FLYCTL = CORPUS / "flyctl"
CORPUS_FILES = sorted([*CORPUS.glob("real/*.toml"), *CORPUS.glob("flyctl/*.toml")])

Plan = dict[str, MachineSpec]


# -- helpers ---------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fly.toml"
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str) -> LoadedConfig:
    return load_config(write(tmp_path, text))


def plan_text(tmp_path: Path, text: str) -> Plan:
    loaded = load_text(tmp_path, text)
    return plan_machines(loaded.config, base_dir=loaded.base_dir)


def load_fixture(name: str) -> LoadedConfig:
    path = FLYCTL / name
    if not path.is_file():
        pytest.skip(f"the flyctl fixture {name} is not in the corpus at {FLYCTL}")
    return load_config(path)


def plan_fixture(name: str) -> Plan:
    loaded = load_fixture(name)
    return plan_machines(loaded.config, base_dir=loaded.base_dir)


def decoded(spec: FileSpec) -> bytes:
    assert spec.raw_value is not None
    return base64.b64decode(spec.raw_value, validate=True)


def corpus_params() -> list:
    if not CORPUS_FILES:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no corpus at {CORPUS}"))]
    return [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in CORPUS_FILES]


# -- process groups --------------------------------------------------------------------------------


def test_no_processes_gives_one_group_named_app(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, 'app = "x"\n')
    assert list(plan) == ["app"]
    assert plan["app"].group == "app"
    assert plan["app"].init.cmd is None


def test_empty_processes_table_gives_one_group_named_app() -> None:
    plan = plan_fixture("processes-none.toml")
    assert list(plan) == ["app"]


def test_groups_are_sorted_and_default_is_alphabetically_first_without_app() -> None:
    loaded = load_fixture("processes-multi.toml")
    plan = plan_machines(loaded.config, base_dir=loaded.base_dir)
    assert list(plan) == ["bar", "foo", "zzz"]
    assert groups.default_group(loaded.config) == "bar"
    assert plan["zzz"].init.cmd == ["/zzzz"]


def test_app_is_the_default_group_when_present() -> None:
    loaded = load_fixture("processes-multiwithapp.toml")
    plan = plan_machines(loaded.config, base_dir=loaded.base_dir)
    assert list(plan) == ["aaa", "abc", "app", "ass", "bbb"]
    assert groups.default_group(loaded.config) == "app"


def test_a_single_group_not_named_app_is_the_default() -> None:
    loaded = load_fixture("processes-one.toml")
    plan = plan_machines(loaded.config, base_dir=loaded.base_dir)
    assert list(plan) == ["web"]
    assert plan["web"].init.cmd == ["/app/server"]


def test_unscoped_item_goes_to_app_even_when_it_is_not_first(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        aaa = "a"
        app = "b"

        [[mounts]]
        source = "data"
        destination = "/data"
        """,
    )
    assert list(plan) == ["aaa", "app"]
    assert [m.name for m in plan["app"].mounts] == ["data"]
    assert plan["aaa"].mounts == []


# -- init ------------------------------------------------------------------------------------------


def test_process_command_is_shell_split(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        web = "bundle exec 'puma -C config/puma.rb' --port=\\"3000\\""
        worker = "  sidekiq   -q default  "
        """,
    )
    assert plan["web"].init.cmd == ["bundle", "exec", "puma -C config/puma.rb", "--port=3000"]
    assert plan["worker"].init.cmd == ["sidekiq", "-q", "default"]


def test_experimental_init_fields_are_carried() -> None:
    plan = plan_fixture("tomachine-experimental.toml")
    assert plan["app"].init == Init(
        cmd=["/call", "me"], entrypoint=["/IgoFirst"], exec=["ignore", "others"]
    )


def test_process_command_overrides_experimental_cmd_but_keeps_entrypoint(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        app = "/override experimental"

        [experimental]
        cmd = ["/call", "me"]
        entrypoint = ["/IgoFirst"]
        exec = ["ignore", "others"]
        """,
    )
    assert plan["app"].init == Init(
        cmd=["/override", "experimental"], entrypoint=["/IgoFirst"], exec=["ignore", "others"]
    )


def test_empty_process_command_falls_back_to_experimental_cmd(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        app = ""
        worker = "run worker"

        [experimental]
        cmd = ["/start", "--all"]
        """,
    )
    assert plan["app"].init.cmd == ["/start", "--all"]
    assert plan["worker"].init.cmd == ["run", "worker"]


def test_empty_process_command_without_experimental_keeps_the_image_cmd(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[processes]\napp = ""\n')
    assert plan["app"].init.cmd is None


def test_experimental_cmd_string_is_one_argument(tmp_path: Path) -> None:
    # Appendix B.5: a string [experimental] cmd is not split.
    plan = plan_text(tmp_path, '[experimental]\ncmd = "a b"\nentrypoint = "/bin/sh"\n')
    assert plan["app"].init.cmd == ["a b"]
    assert plan["app"].init.entrypoint == ["/bin/sh"]


def test_swap_size_mb_goes_to_every_group(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, 'swap_size_mb = 512\n[processes]\na = "x"\nb = "y"\n')
    assert [spec.init.swap_size_mb for spec in plan.values()] == [512, 512]
    assert plan_text(tmp_path, 'app = "x"\n')["app"].init.swap_size_mb is None


# -- env and metadata ------------------------------------------------------------------------------


def test_env_is_env_table_plus_group_and_primary_region() -> None:
    plan = plan_fixture("tomachine.toml")
    assert plan["app"].env == {"FOO": "BAR", "PRIMARY_REGION": "mia", "FLY_PROCESS_GROUP": "app"}


def test_env_has_the_group_of_each_machine(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[env]\nA = "1"\n[processes]\nweb = "w"\nworker = "k"\n')
    assert plan["web"].env == {"A": "1", "FLY_PROCESS_GROUP": "web"}
    assert plan["worker"].env == {"A": "1", "FLY_PROCESS_GROUP": "worker"}


def test_primary_region_overrides_env_primary_region(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, 'primary_region = "ams"\n[env]\nPRIMARY_REGION = "lhr"\n')
    assert plan["app"].env["PRIMARY_REGION"] == "ams"


def test_env_primary_region_is_kept_without_primary_region(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[env]\nPRIMARY_REGION = "lhr"\n')
    assert plan["app"].env == {"PRIMARY_REGION": "lhr", "FLY_PROCESS_GROUP": "app"}


def test_no_primary_region_means_no_primary_region_variable(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, 'app = "x"\n')
    assert plan["app"].env == {"FLY_PROCESS_GROUP": "app"}


def test_metadata_marks_fly_launch_machines_of_each_group() -> None:
    plan = plan_fixture("processes-multi.toml")
    for name, spec in plan.items():
        assert spec.metadata == {"fly_platform_version": "v2", "fly_process_group": name}


# -- which items reach which group -----------------------------------------------------------------

SCOPING = """
[processes]
web = "run web"
worker = "run worker"

[[services]]
internal_port = 3000
[[services.ports]]
port = 3000

[[mounts]]
source = "data"
destination = "/data"

[[metrics]]
port = 9091
path = "/metrics"

[[restart]]
policy = "always"

[checks.alive]
type = "tcp"
port = 3000

[[vm]]
size = "shared-cpu-2x"
"""


def test_items_without_processes_apply_only_to_the_default_group(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, SCOPING)
    web, worker = plan["web"], plan["worker"]
    assert [s.internal_port for s in web.services] == [3000]
    assert [m.name for m in web.mounts] == ["data"]
    assert web.metrics == MetricsSpec(port=9091, path="/metrics")
    assert web.restart.policy == "always"
    assert [c.name for c in web.checks] == ["alive"]

    assert worker.services == []
    assert worker.mounts == []
    assert worker.metrics is None
    assert worker.restart == RestartSpec(policy="on-failure", max_retries=10)
    assert worker.checks == []


def test_vm_without_processes_applies_to_every_group(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, SCOPING)
    for spec in plan.values():
        assert (spec.guest.cpu_kind, spec.guest.cpus, spec.guest.memory_mb) == ("shared", 2, 512)


def test_http_service_without_processes_applies_only_to_the_default_group(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path, '[processes]\nweb = "w"\nworker = "k"\n[http_service]\ninternal_port = 8080\n'
    )
    assert [s.source for s in plan["web"].services] == ["http_service"]
    assert plan["worker"].services == []


def test_files_without_processes_go_to_every_group(tmp_path: Path) -> None:
    # A real deploy merges [[files]] before splitting the config by group (flyctl's
    # processgroups.go), so a file without processes reaches every group, as the
    # reference describes.
    plan = plan_text(
        tmp_path,
        """
        [processes]
        web = "w"
        worker = "k"

        [[files]]
        guest_path = "/etc/motd"
        raw_value = "hi"
        """,
    )
    assert [f.guest_path for f in plan["web"].files] == ["/etc/motd"]
    assert [f.guest_path for f in plan["worker"].files] == ["/etc/motd"]


def test_files_with_processes_go_to_those_groups(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        web = "w"
        worker = "k"

        [[files]]
        guest_path = "/etc/default-only"
        raw_value = "a"

        [[files]]
        guest_path = "/etc/worker"
        raw_value = "b"
        processes = ["worker"]
        """,
    )
    assert [f.guest_path for f in plan["web"].files] == ["/etc/default-only"]
    assert [f.guest_path for f in plan["worker"].files] == ["/etc/default-only", "/etc/worker"]


def test_tomachine_processgroups_fixture() -> None:
    # flyctl: TestToMachineConfig_multiProcessGroups.
    plan = plan_fixture("tomachine-processgroups.toml")
    assert list(plan) == ["app", "foo", "vpn"]
    assert plan["app"].init.cmd == ["run-nginx"]
    assert plan["vpn"].init.cmd == ["run-tailscale"]
    assert plan["foo"].init.cmd == ["keep", "me", "alive"]

    def services(group: str) -> list[tuple[str, int]]:
        return [(s.protocol, s.internal_port) for s in plan[group].services]

    assert services("app") == [("tcp", 8080), ("tcp", 1111)]
    assert [p.port for p in plan["app"].services[0].ports] == [80, 443]
    assert plan["app"].services[1].ports == []
    assert services("vpn") == [("udp", 9999), ("tcp", 1111)]
    assert services("foo") == [("tcp", 1111)]

    listening = Check(name="listening", type="tcp", port=8080)
    assert plan["app"].checks == [listening]
    assert plan["foo"].checks == [listening]
    assert plan["vpn"].checks == []


def test_tomachine_mounts_fixture() -> None:
    # flyctl: TestToReleaseMachineConfig_processGroupsAndMounts.
    plan = plan_fixture("tomachine-mounts.toml")
    assert [(m.name, m.path) for m in plan["app"].mounts] == [("data", "/data")]
    assert [(m.name, m.path) for m in plan["back"].mounts] == [("trash", "/trash")]
    assert plan["hola"].mounts == []


# -- http_service and services ---------------------------------------------------------------------


def test_http_service_expands_to_80_and_443(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [http_service]
        internal_port = 3000
        force_https = true

        [http_service.tls_options]
        alpn = ["h2", "http/1.1"]
        versions = ["TLSv1.3"]

        [http_service.http_options]
        compress = true
        h2_backend = true
        """,
    )
    [svc] = plan["app"].services
    http_options = {"compress": True, "h2_backend": True}
    assert svc.protocol == "tcp"
    assert svc.internal_port == 3000
    assert svc.source == "http_service"
    assert svc.ports == [
        Port(port=80, handlers=["http"], force_https=True, http_options=http_options),
        Port(
            port=443,
            handlers=["http", "tls"],
            force_https=False,
            http_options=http_options,
            tls_options={"alpn": ["h2", "http/1.1"], "versions": ["TLSv1.3"]},
        ),
    ]


def test_http_service_without_force_https_or_options(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, "[http_service]\ninternal_port = 8080\n")
    assert plan["app"].services[0].ports == [
        Port(port=80, handlers=["http"]),
        Port(port=443, handlers=["http", "tls"]),
    ]


def test_http_service_internal_port_defaults_to_8080(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, "[http_service]\nforce_https = true\n")
    assert plan["app"].services[0].internal_port == 8080


def test_http_service_defaults(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, "[http_service]\ninternal_port = 8080\n")
    svc = plan["app"].services[0]
    assert svc.concurrency == Concurrency(type="connections", soft_limit=20, hard_limit=None)
    assert (svc.autostop, svc.autostart, svc.min_machines_running) == ("off", True, 0)
    assert svc.checks == []


def test_http_service_values_are_carried(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [http_service]
        internal_port = 8080
        auto_stop_machines = "suspend"
        auto_start_machines = false
        min_machines_running = 2

        [http_service.concurrency]
        type = "requests"
        soft_limit = 40
        hard_limit = 50
        """,
    )
    svc = plan["app"].services[0]
    assert svc.concurrency == Concurrency(type="requests", soft_limit=40, hard_limit=50)
    assert (svc.autostop, svc.autostart, svc.min_machines_running) == ("suspend", False, 2)


def test_tomachine_fixture_http_service() -> None:
    # flyctl: TestToMachineConfig (services part).
    plan = plan_fixture("tomachine.toml")
    [svc] = plan["app"].services
    assert (svc.protocol, svc.internal_port) == ("tcp", 8080)
    assert svc.ports == [
        Port(port=80, handlers=["http"], force_https=True),
        Port(port=443, handlers=["http", "tls"], force_https=False),
    ]


def test_services_ports_ranges_and_handlers(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[services]]
        internal_port = 5000
        protocol = "udp"
        [[services.ports]]
        port = 5000

        [[services]]
        internal_port = 5432
        protocol = "tcp"
        [[services.ports]]
        start_port = 10000
        end_port = 10099
        handlers = ["tls"]
        [[services.ports]]
        port = 5432
        handlers = ["pg_tls"]
        [[services.ports]]
        port = 443
        handlers = ["tls", "http"]
        force_https = false
        """,
    )
    udp, tcp = plan["app"].services
    assert (udp.protocol, udp.internal_port, udp.source) == ("udp", 5000, "services[0]")
    assert udp.ports == [Port(port=5000, handlers=[])]
    assert (tcp.protocol, tcp.internal_port, tcp.source) == ("tcp", 5432, "services[1]")
    assert tcp.ports == [
        Port(start_port=10000, end_port=10099, handlers=["tls"]),
        Port(port=5432, handlers=["pg_tls"]),
        Port(port=443, handlers=["tls", "http"]),
    ]


def test_service_port_options_are_carried() -> None:
    plan = plan_fixture("services-ports.toml")
    [svc] = plan["app"].services
    first, second = svc.ports
    assert first.port == 80
    assert first.tls_options == {"alpn": ["h2", "http/1.1"], "versions": ["TLSv1.2", "TLSv1.3"]}
    assert first.http_options == {
        "compress": True,
        "response": {
            "headers": {
                "fly-request-id": False,
                "fly-wasnt-here": "yes, it was",
                "multi-valued": ["value1", "value2"],
            }
        },
    }
    assert second == Port(port=82, handlers=["proxy_proto"], proxy_proto_options={"version": "v2"})


def test_service_defaults(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, "[[services]]\n[[services.ports]]\nport = 80\n")
    [svc] = plan["app"].services
    assert svc.protocol == "tcp"
    assert svc.internal_port == 8080
    assert svc.concurrency == Concurrency(type="connections", soft_limit=20, hard_limit=None)
    assert (svc.autostop, svc.autostart, svc.min_machines_running) == ("off", True, 0)


def test_service_values_are_carried(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[services]]
        internal_port = 6000
        auto_stop_machines = "stop"
        auto_start_machines = false
        min_machines_running = 1
        [services.concurrency]
        type = "requests"
        soft_limit = 13
        hard_limit = 22
        [[services.ports]]
        port = 80

        [[services]]
        internal_port = 6001
        auto_stop_machines = true
        [services.concurrency]
        hard_limit = 5
        [[services.ports]]
        port = 81
        """,
    )
    first, second = plan["app"].services
    assert first.concurrency == Concurrency(type="requests", soft_limit=13, hard_limit=22)
    assert (first.autostop, first.autostart, first.min_machines_running) == ("stop", False, 1)
    # Legacy boolean auto_stop_machines = true means "stop"; soft_limit keeps its default.
    assert second.autostop == "stop"
    assert second.concurrency == Concurrency(type="connections", soft_limit=20, hard_limit=5)


def test_tomachine_services_fixture_autostop_autostart() -> None:
    # flyctl: TestToMachineConfig_services; taxiway shows the defaults flyctl leaves unset.
    plan = plan_fixture("tomachine-services.toml")
    got = [(s.internal_port, s.autostop, s.autostart) for s in plan["app"].services]
    assert got == [
        (8080, "stop", True),
        (1000, "stop", True),
        (1001, "off", False),
        (1002, "off", False),
        (1003, "stop", True),
        (1004, "off", True),
    ]


# -- service checks --------------------------------------------------------------------------------


def test_service_check_names_and_defaults(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[services]]
        internal_port = 3000
        [[services.ports]]
        port = 80
        [[services.tcp_checks]]
        [[services.tcp_checks]]
        interval = "30s"
        [[services.http_checks]]
        """,
    )
    checks = plan["app"].services[0].checks
    assert checks == [
        Check(
            name="servicecheck-00-tcp-3000",
            type="tcp",
            port=3000,
            interval="15s",
            timeout="2s",
            grace_period="0s",
        ),
        Check(name="servicecheck-01-tcp-3000", type="tcp", port=3000, interval="30s"),
        Check(
            name="servicecheck-02-http-3000",
            type="http",
            port=3000,
            method="GET",
            path="/",
            protocol="http",
        ),
    ]


def test_http_service_check_name_and_fields(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [http_service]
        internal_port = 8080
        [[http_service.checks]]
        interval = "10s"
        timeout = "5s"
        grace_period = "3s"
        method = "head"
        path = "/healthz"
        protocol = "https"
        tls_skip_verify = true
        tls_server_name = "example.com"
        [http_service.checks.headers]
        X-Forwarded-Proto = "https"
        """,
    )
    [check] = plan["app"].services[0].checks
    assert check == Check(
        name="servicecheck-00-http-8080",
        type="http",
        port=8080,
        interval="10s",
        timeout="5s",
        grace_period="3s",
        method="head",  # service checks pass the method as written (§4.2)
        path="/healthz",
        protocol="https",
        tls_skip_verify=True,
        tls_server_name="example.com",
        headers={"X-Forwarded-Proto": "https"},
    )


def test_service_check_numbering_restarts_for_each_service(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[services]]
        internal_port = 3000
        [[services.http_checks]]

        [[services]]
        internal_port = 4000
        [[services.tcp_checks]]
        """,
    )
    names = [[c.name for c in s.checks] for s in plan["app"].services]
    assert names == [["servicecheck-00-http-3000"], ["servicecheck-00-tcp-4000"]]


def test_service_check_times_are_clamped_to_1s_60s(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[services]]
        internal_port = 3000
        [[services.tcp_checks]]
        interval = "500ms"
        timeout = "2m"
        grace_period = "0s"
        [[services.tcp_checks]]
        interval = "90s"
        timeout = "100ms"
        grace_period = "200ms"
        [[services.tcp_checks]]
        interval = "1m"
        timeout = "1s"
        grace_period = "5m"
        """,
    )
    got = [(c.interval, c.timeout, c.grace_period) for c in plan["app"].services[0].checks]
    assert got == [("1s", "1m", "0s"), ("1m", "1s", "1s"), ("1m", "1s", "1m")]


def test_bare_numbers_in_service_checks_are_milliseconds(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[services]]
        internal_port = 3000
        [[services.tcp_checks]]
        interval = 30000
        timeout = 2500
        """,
    )
    [check] = plan["app"].services[0].checks
    assert (check.interval, check.timeout) == ("30s", "2500ms")


def test_http_service_check_interval_over_a_minute_is_lowered() -> None:
    loaded = load_fixture("full-reference.toml")
    plan = plan_machines(loaded.config, base_dir=loaded.base_dir)
    [check] = plan["task"].services[0].checks
    assert (check.name, check.interval, check.timeout) == ("servicecheck-00-http-8080", "1m", "7s")


# -- top-level checks ------------------------------------------------------------------------------


def test_top_level_checks_of_tomachine_fixture() -> None:
    # flyctl: TestToMachineConfig (checks part); taxiway fills method/protocol/time defaults.
    plan = plan_fixture("tomachine.toml")
    assert plan["app"].checks == [
        Check(name="listening", type="tcp", port=8080, interval="15s", timeout="2s"),
        Check(
            name="status",
            type="http",
            port=8080,
            interval="10s",
            timeout="1s",
            grace_period="0s",
            method="GET",
            path="/status",
            protocol="http",
        ),
    ]


def test_top_level_check_port_falls_back_to_http_service_internal_port() -> None:
    # flyctl: TestToMachineConfig_defaultV2flytoml.
    plan = plan_fixture("tomachine-default-for-new-apps.toml")
    assert plan["app"].checks == [
        Check(name="alive", type="tcp", port=8080, interval="15s", timeout="2s", grace_period="5s")
    ]
    assert plan["app"].env == {"PRIMARY_REGION": "ord", "FLY_PROCESS_GROUP": "app"}


def test_top_level_check_port_fallback_uses_the_groups_http_service(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        web = "w"
        worker = "k"

        [http_service]
        internal_port = 3000
        processes = ["web"]

        [checks.up]
        type = "http"
        path = "/up"
        method = "head"
        processes = ["web", "worker"]

        [checks.port]
        type = "tcp"
        port = 9000
        processes = ["worker"]
        """,
    )
    [web_up] = plan["web"].checks
    assert (web_up.name, web_up.port, web_up.method, web_up.path) == ("up", 3000, "HEAD", "/up")
    worker_checks = {c.name: c for c in plan["worker"].checks}
    assert list(worker_checks) == ["up", "port"]
    # No http_service for worker: nothing to take the port from (validation reports it).
    assert worker_checks["up"].port is None
    assert worker_checks["port"].port == 9000


def test_top_level_http_check_method_is_upper_cased(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [checks.a]
        type = "http"
        port = 8080
        method = "post"
        [checks.b]
        type = "http"
        port = 8080
        """,
    )
    assert [c.method for c in plan["app"].checks] == ["POST", "GET"]


def test_top_level_check_fields_are_carried() -> None:
    loaded = load_fixture("full-reference.toml")
    plan = plan_machines(loaded.config, base_dir=loaded.base_dir)
    assert plan["task"].checks == [
        Check(
            name="status",
            type="http",
            port=2020,
            interval="10s",
            timeout="2s",
            grace_period="27s",
            method="GET",
            path="/status",
            protocol="https",
            tls_skip_verify=True,
            tls_server_name="sni3.com",
            headers={"Content-Type": "application/json", "Authorization": "super-duper-secret"},
        )
    ]
    assert plan["web"].checks == []


# -- metrics, restart, stop ------------------------------------------------------------------------


def test_only_the_first_matching_metrics_entry_is_used(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        web = "w"
        worker = "k"

        [[metrics]]
        port = 9999
        path = "/worker-metrics"
        processes = ["worker"]

        [[metrics]]
        port = 9091
        path = "/metrics"
        processes = ["web", "worker"]
        https = true
        """,
    )
    assert plan["worker"].metrics == MetricsSpec(port=9999, path="/worker-metrics")
    assert plan["web"].metrics == MetricsSpec(port=9091, path="/metrics", https=True)


def test_metrics_of_full_reference() -> None:
    plan = plan_fixture("full-reference.toml")
    assert plan["task"].metrics == MetricsSpec(port=9999, path="/metrics")
    assert plan["web"].metrics == MetricsSpec(port=9998, path="/metrics")


def test_the_last_matching_restart_entry_wins(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        web = "w"
        worker = "k"

        [[restart]]
        policy = "always"
        processes = ["web", "worker"]

        [[restart]]
        policy = "on-failure"
        retries = 3
        processes = ["worker"]
        """,
    )
    assert plan["web"].restart.policy == "always"
    assert plan["worker"].restart == RestartSpec(policy="on-failure", max_retries=3)


def test_restart_never_maps_to_no(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[[restart]]\npolicy = "never"\nretries = 10\nprocesses = ["app"]\n')
    assert plan["app"].restart.policy == "no"


def test_restart_always_has_no_retry_count(tmp_path: Path) -> None:
    # taxiway drops max_retries outside on-failure (flyctl would send it; it has no effect there).
    plan = plan_text(tmp_path, '[[restart]]\npolicy = "always"\nretries = 3\n')
    assert plan["app"].restart == RestartSpec(policy="always", max_retries=None)


def test_restart_defaults_to_on_failure_with_10_retries(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, 'app = "x"\n')
    assert plan["app"].restart == RestartSpec(policy="on-failure", max_retries=10)
    plan = plan_text(tmp_path, '[[restart]]\npolicy = "on-failure"\n')
    assert plan["app"].restart == RestartSpec(policy="on-failure", max_retries=10)


def test_tomachine_fixture_restart_and_stop_config() -> None:
    plan = plan_fixture("tomachine.toml")
    assert plan["app"].restart.policy == "always"
    assert plan["app"].stop_config == StopConfig(signal="SIGTERM", timeout="10s")
    assert plan["app"].init.swap_size_mb == 512


def test_stop_config_defaults_to_sigint_and_5s(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, 'app = "x"\n')
    assert plan["app"].stop_config == StopConfig(signal="SIGINT", timeout="5s")


def test_stop_config_goes_to_every_group(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path, 'kill_signal = "SIGTERM"\nkill_timeout = 30\n[processes]\na = "x"\nb = "y"\n'
    )
    # A bare kill_timeout is seconds.
    for spec in plan.values():
        assert spec.stop_config == StopConfig(signal="SIGTERM", timeout="30s")


def test_stop_config_with_only_a_signal(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, 'kill_signal = "SIGQUIT"\n')
    assert plan["app"].stop_config == StopConfig(signal="SIGQUIT", timeout="5s")


def test_experimental_kill_timeout_is_the_legacy_place() -> None:
    plan = plan_fixture("experimental-alt.toml")
    assert plan["app"].stop_config.timeout == "3s"
    assert plan["app"].init == Init(cmd=["cmd"], entrypoint=["entrypoint"], exec=["exec"])
    assert plan["app"].metrics == MetricsSpec(port=9000, path="/foo")


# -- guest -----------------------------------------------------------------------------------------


def guest_tuple(guest: Guest) -> tuple[str, int, int]:
    return (guest.cpu_kind, guest.cpus, guest.memory_mb)


def test_default_guest_is_shared_cpu_1x(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, 'app = "x"\n')
    assert plan["app"].guest == Guest(cpu_kind="shared", cpus=1, memory_mb=256)
    assert plan["app"].guest.size == "shared-cpu-1x"
    assert plan["app"].guest.gpus is None


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("shared-cpu-1x", ("shared", 1, 256)),
        ("shared-cpu-2x", ("shared", 2, 512)),
        ("shared-cpu-8x", ("shared", 8, 2048)),
        ("performance-1x", ("performance", 1, 2048)),
        ("performance-2x", ("performance", 2, 4096)),
        ("performance-16x", ("performance", 16, 32768)),
    ],
)
def test_size_presets(tmp_path: Path, size: str, expected: tuple[str, int, int]) -> None:
    plan = plan_text(tmp_path, f'[[vm]]\nsize = "{size}"\n')
    assert guest_tuple(plan["app"].guest) == expected
    assert plan["app"].guest.size == size


def test_explicit_keys_override_the_preset(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[vm]]
        size = "performance-2x"
        memory = "8gb"
        cpus = 4
        cpu_kind = "shared"
        kernel_args = ["quiet"]
        persist_rootfs = "always"
        """,
    )
    guest = plan["app"].guest
    assert guest_tuple(guest) == ("shared", 4, 8192)
    assert (guest.kernel_args, guest.persist_rootfs) == (["quiet"], "always")


def test_memory_alone_keeps_the_default_cpus(tmp_path: Path) -> None:
    # Like flyctl's release_command_vm: performance-2x + memory "4G".
    plan = plan_text(tmp_path, '[[vm]]\nmemory = "1gb"\n')
    assert guest_tuple(plan["app"].guest) == ("shared", 1, 1024)
    plan = plan_text(tmp_path, '[[vm]]\nsize = "performance-2x"\nmemory = 4096\n')
    assert guest_tuple(plan["app"].guest) == ("performance", 2, 4096)


def test_memory_mb_wins_over_memory(tmp_path: Path) -> None:
    # flyctl's computeToGuest sets memory first, then copies the guest keys (memory_mb) over it.
    plan = plan_text(tmp_path, '[[vm]]\nmemory = "1gb"\nmemory_mb = 2048\n')
    assert plan["app"].guest.memory_mb == 2048


def test_gpu_kind_alone_gives_one_gpu_and_the_gpu_preset(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[[vm]]\ngpu_kind = "l40s"\n')
    guest = plan["app"].guest
    assert guest_tuple(guest) == ("performance", 8, 16384)
    assert (guest.gpu_kind, guest.gpus, guest.size) == ("l40s", 1, "performance-8x")


def test_gpu_count_is_carried(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[[vm]]\nsize = "performance-16x"\ngpu_kind = "a10"\ngpus = 2\n')
    guest = plan["app"].guest
    assert (guest.cpus, guest.gpu_kind, guest.gpus) == (16, "a10", 2)


def test_reference_vm_example_app_worker_other(tmp_path: Path) -> None:
    # The reference's [[vm]] example: shared-cpu-4x for app and other, performance-1x for worker.
    plan = plan_text(
        tmp_path,
        """
        [processes]
        app = "/start-app"
        worker = "/start-worker"
        other = "/start-other"

        [[vm]]
        size = "shared-cpu-4x"

        [[vm]]
        size = "performance-1x"
        processes = ["worker"]
        """,
    )
    assert guest_tuple(plan["app"].guest) == ("shared", 4, 1024)
    assert guest_tuple(plan["other"].guest) == ("shared", 4, 1024)
    assert guest_tuple(plan["worker"].guest) == ("performance", 1, 2048)


def test_the_later_of_two_specific_vm_sections_wins(tmp_path: Path) -> None:
    # Validation: "group 'web' is named by vm[0] and vm[1]; the later one wins"; flyctl too
    # keeps one [[vm]] per group (the last specific one), it does not merge them.
    plan = plan_text(
        tmp_path,
        """
        [processes]
        web = "w"

        [[vm]]
        size = "performance-2x"
        processes = ["web"]

        [[vm]]
        memory_mb = 512
        processes = ["web"]
        """,
    )
    assert guest_tuple(plan["web"].guest) == ("shared", 1, 512)


def test_tomachine_compute_fixture() -> None:
    # flyctl: TestToMachineConfig_compute.
    plan = plan_fixture("tomachine-compute.toml")
    assert list(plan) == ["app", "isolated", "whisper", "worker"]
    assert guest_tuple(plan["app"].guest) == ("shared", 2, 512)
    assert guest_tuple(plan["worker"].guest) == ("shared", 2, 512)
    whisper = plan["whisper"].guest
    assert guest_tuple(whisper) == ("performance", 8, 65536)
    assert (whisper.gpu_kind, whisper.gpus) == ("a100-pcie-40gb", 1)
    isolated = plan["isolated"].guest
    assert guest_tuple(isolated) == ("shared", 1, 256)
    assert isolated.host_dedication_id == "lookma-iamsolo"
    assert plan["app"].guest.host_dedication_id is None


def test_tomachine_compute_nodefault_fixture() -> None:
    # flyctl sends no guest for app/woo (the machine keeps its size); taxiway shows the
    # size new machines get.
    plan = plan_fixture("tomachine-compute-nodefault.toml")
    assert guest_tuple(plan["app"].guest) == ("shared", 1, 256)
    assert guest_tuple(plan["woo"].guest) == ("shared", 1, 256)
    assert guest_tuple(plan["bar"].guest) == ("performance", 4, 8192)


def test_tomachine_hostdedicationid_fixture() -> None:
    # flyctl: TestToMachineConfig_hostdedicationid.
    plan = plan_fixture("tomachine-hostdedicationid.toml")
    assert plan["back"].guest == Guest(
        cpu_kind="shared", cpus=1, memory_mb=256, host_dedication_id="specific"
    )
    assert guest_tuple(plan["other"].guest) == ("shared", 4, 1024)
    assert plan["other"].guest.host_dedication_id == "toplevel"
    # No [[vm]] for front: the top-level id still applies to its machines.
    assert plan["front"].guest.host_dedication_id == "toplevel"


# -- mounts ----------------------------------------------------------------------------------------


def test_mount_defaults(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[mounts]\nsource = "data"\ndestination = "/data"\n')
    assert plan["app"].mounts == [
        MountSpec(
            name="data",
            path="/data",
            size_gb=1,
            snapshot_retention=5,
            scheduled_snapshots=True,
            extend_threshold_percent=None,
            add_size_gb=None,
            size_gb_limit=None,
        )
    ]


def test_mount_values_are_carried(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[mounts]]
        source = "pg_data"
        destination = "/var/lib/postgresql"
        initial_size = "30gb"
        snapshot_retention = 17
        scheduled_snapshots = false
        auto_extend_size_threshold = 80
        auto_extend_size_increment = "5GB"
        auto_extend_size_limit = "100GB"
        """,
    )
    assert plan["app"].mounts == [
        MountSpec(
            name="pg_data",
            path="/var/lib/postgresql",
            size_gb=30,
            snapshot_retention=17,
            scheduled_snapshots=False,
            extend_threshold_percent=80,
            add_size_gb=5,
            size_gb_limit=100,
        )
    ]


def test_bare_initial_size_is_gigabytes(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[[mounts]]\nsource = "d"\ndestination = "/d"\ninitial_size = 20\n')
    assert plan["app"].mounts[0].size_gb == 20


def test_mount_default_size_is_100gb_with_a_gpu(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        gpu = "infer"
        web = "serve"

        [[vm]]
        gpu_kind = "a100-pcie-40gb"
        processes = ["gpu"]

        [[mounts]]
        source = "models"
        destination = "/models"
        processes = ["gpu"]

        [[mounts]]
        source = "data"
        destination = "/data"
        processes = ["web"]
        """,
    )
    assert [(m.name, m.size_gb) for m in plan["gpu"].mounts] == [("models", 100)]
    assert [(m.name, m.size_gb) for m in plan["web"].mounts] == [("data", 1)]


def test_mounts_array_fixture() -> None:
    plan = plan_fixture("mounts-array.toml")
    assert [(m.name, m.path, m.size_gb) for m in plan["app"].mounts] == [("pg_data", "/data", 1)]


# -- files -----------------------------------------------------------------------------------------


def test_raw_value_is_delivered_as_the_literal_text(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[files]]
        guest_path = "/etc/motd"
        raw_value = "hello world\\n"
        """,
    )
    [spec] = plan["app"].files
    assert spec.guest_path == "/etc/motd"
    assert spec.secret_name is None
    assert decoded(spec) == b"hello world\n"


def test_base64_looking_raw_value_is_still_literal() -> None:
    # Appendix B.1: flyctl base64-encodes raw_value again, so the file gets the text itself.
    plan = plan_fixture("full-reference.toml")
    hello = next(f for f in plan["task"].files if f.guest_path == "/path/to/hello.txt")
    assert decoded(hello) == b"aGVsbG8gd29ybGQK"


def test_local_path_is_read_relative_to_base_dir(tmp_path: Path) -> None:
    content = b"\x00\xffbinary\nconfig\n"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.conf").write_bytes(content)
    plan = plan_text(
        tmp_path,
        """
        [[files]]
        guest_path = "/etc/app.conf"
        local_path = "conf/app.conf"
        """,
    )
    [spec] = plan["app"].files
    assert spec.guest_path == "/etc/app.conf"
    assert decoded(spec) == content


def test_local_path_uses_the_given_base_dir_not_the_config_folder(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    (here / "a.txt").write_text("from here")
    (there / "a.txt").write_text("from there")
    loaded = load_text(here, '[[files]]\nguest_path = "/a.txt"\nlocal_path = "a.txt"\n')
    assert decoded(plan_machines(loaded.config, base_dir=there)["app"].files[0]) == b"from there"
    assert decoded(plan_machines(loaded.config, base_dir=here)["app"].files[0]) == b"from here"


def test_local_path_without_base_dir_is_read_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "a.txt").write_text("cwd")
    loaded = load_text(tmp_path / "cfg", '[[files]]\nguest_path = "/a"\nlocal_path = "a.txt"\n')
    monkeypatch.chdir(tmp_path)
    assert decoded(plan_machines(loaded.config)["app"].files[0]) == b"cwd"


def test_absolute_local_path(tmp_path: Path) -> None:
    source = tmp_path / "abs.txt"
    source.write_text("absolute")
    plan = plan_text(tmp_path, f'[[files]]\nguest_path = "/a"\nlocal_path = "{source}"\n')
    assert decoded(plan["app"].files[0]) == b"absolute"


def test_secret_name_is_carried(tmp_path: Path) -> None:
    plan = plan_text(tmp_path, '[[files]]\nguest_path = "/s"\nsecret_name = "SUPER_SECRET"\n')
    assert plan["app"].files == [FileSpec(guest_path="/s", secret_name="SUPER_SECRET")]


def test_files_with_an_empty_source_are_omitted(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [[files]]
        guest_path = "/removed-local"
        local_path = ""

        [[files]]
        guest_path = "/removed-raw"
        raw_value = ""

        [[files]]
        guest_path = "/kept"
        raw_value = "x"
        """,
    )
    assert [f.guest_path for f in plan["app"].files] == ["/kept"]


def test_files_keep_their_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("b")
    plan = plan_text(
        tmp_path,
        """
        [[files]]
        guest_path = "/a"
        raw_value = "a"
        [[files]]
        guest_path = "/b"
        local_path = "b.txt"
        [[files]]
        guest_path = "/c"
        secret_name = "C"
        """,
    )
    assert [f.guest_path for f in plan["app"].files] == ["/a", "/b", "/c"]


# -- statics and machine checks --------------------------------------------------------------------


def test_statics_go_to_every_group(tmp_path: Path) -> None:
    plan = plan_text(
        tmp_path,
        """
        [processes]
        web = "w"
        worker = "k"

        [[statics]]
        guest_path = "/app/public"
        url_prefix = "/public"

        [[statics]]
        guest_path = "/"
        url_prefix = "/assets"
        tigris_bucket = "bucket"
        index_document = "index.html"
        """,
    )
    expected = [
        StaticSpec(guest_path="/app/public", url_prefix="/public"),
        StaticSpec(
            guest_path="/",
            url_prefix="/assets",
            tigris_bucket="bucket",
            index_document="index.html",
        ),
    ]
    assert plan["web"].statics == expected
    assert plan["worker"].statics == expected


def test_tomachine_fixture_statics_metrics_mounts() -> None:
    plan = plan_fixture("tomachine.toml")
    app = plan["app"]
    assert app.statics == [
        StaticSpec(
            guest_path="/guest/path",
            url_prefix="/url/prefix",
            tigris_bucket="example-bucket",
            index_document="index.html",
        )
    ]
    assert app.metrics == MetricsSpec(port=9999, path="/metrics")
    assert [(m.name, m.path) for m in app.mounts] == [("data", "/data")]


def test_machine_checks_follow_their_service() -> None:
    plan = plan_fixture("tomachine-machinechecks.toml")
    for group in ("greeting", "salutation"):
        [check] = plan[group].machine_checks
        assert check.command == ["curl", "https://fly.io"]
        assert (check.image, check.entrypoint) == ("curlimages/curl", ["/bin/sh"])
    assert plan["farewell"].machine_checks == []
    assert plan["farewell"].services == []
    assert plan["greeting"].init.cmd == ["echo", "Hello"]


# -- the whole corpus ------------------------------------------------------------------------------

SERVICE_CHECK_NAME = re.compile(r"^servicecheck-\d{2}-(tcp|http)-(\d+)$")


@pytest.mark.parametrize("path", corpus_params())
def test_every_corpus_file_plans(path: Path) -> None:
    try:
        loaded = load_config(path)  # invalid configs still load, with diagnostics
    except ConfigFileError as exc:
        pytest.skip(f"not parseable, nothing to plan: {exc}")
    config = loaded.config
    plan = plan_machines(config, base_dir=loaded.base_dir)

    assert list(plan) == (sorted(config.processes) if config.processes else ["app"])
    for name, spec in plan.items():
        assert spec.group == name
        assert spec.metadata == {"fly_platform_version": "v2", "fly_process_group": name}
        assert spec.env["FLY_PROCESS_GROUP"] == name
        if config.primary_region:
            assert spec.env["PRIMARY_REGION"] == config.primary_region
        assert len(spec.statics) == len(config.statics or ())
        assert spec.guest.cpus >= 1
        assert spec.guest.memory_mb >= 1
        assert spec.restart.policy in ("no", "always", "on-failure")
        for service in spec.services:
            assert service.concurrency.soft_limit is not None
            for check in service.checks:
                match = SERVICE_CHECK_NAME.match(check.name)
                assert match, check.name
                assert match.group(1) == check.type
                assert int(match.group(2)) == service.internal_port == check.port
        assert len(spec.mounts) <= len(config.mounts or ())


@pytest.mark.parametrize("path", corpus_params())
def test_every_corpus_plan_encodes_as_json(path: Path) -> None:
    try:
        loaded = load_config(path)
    except ConfigFileError as exc:
        pytest.skip(f"not parseable, nothing to plan: {exc}")
    plan = plan_machines(loaded.config, base_dir=loaded.base_dir)
    data = msgspec.json.encode(plan)
    as_json = msgspec.json.decode(data)
    assert list(as_json) == list(plan)
    assert all(as_json[name]["group"] == name for name in plan)
    # What `taxiway config machines --json` prints reads back into the same specs.
    assert msgspec.json.decode(data, type=Plan) == plan


def test_an_invalid_config_still_plans() -> None:
    loaded = load_fixture("always-invalid-v2.toml")
    assert not loaded.valid
    plan = plan_machines(loaded.config, base_dir=loaded.base_dir)
    assert list(plan) == ["app"]
    # The string port is read as a number; the rejected concurrency falls back to defaults.
    [svc] = plan["app"].services
    assert (svc.internal_port, svc.concurrency) == (8080, Concurrency())
