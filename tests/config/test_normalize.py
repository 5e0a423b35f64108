"""Legacy fly.toml spellings: what normalize() rewrites them to, and what it says about it.

Each legacy form flyctl still accepts (`internal/appconfig/patches.go`) must come out of
`normalize` in today's form, with a diagnostic of the right severity on the path
the user wrote: ``info`` for a spelling that means the same, ``warning`` for a key
that is dropped or read differently from flyctl, ``error`` for a value that cannot
be read. The second half loads real files through the loader to check that those
diagnostics point at the right LINE of the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from taxiway.config.diagnostics import Diagnostic, Diagnostics, KeyPath, Severity
from taxiway.config.loader import LoadedConfig, check_source, load_config
from taxiway.config.normalize import Normalized, normalize
from taxiway.config.source import read_config

INFO, WARNING, ERROR = Severity.INFO, Severity.WARNING, Severity.ERROR


# --- helpers -----------------------------------------------------------------------------


def norm(data: dict[str, Any] | str) -> tuple[Normalized, list[Diagnostic]]:
    """Normalise a dict (or TOML text) and return the result with its diagnostics."""
    raw = tomllib.loads(data) if isinstance(data, str) else data
    diags = Diagnostics()
    result = normalize(raw, diags)
    return result, list(diags)


def at(diags: list[Diagnostic], path: KeyPath) -> Diagnostic:
    """The one diagnostic about exactly ``path``."""
    found = [d for d in diags if d.path == path]
    assert len(found) == 1, f"expected one diagnostic at {path}, got {diags}"
    return found[0]


def load(tmp_path: Path, text: str, name: str = "fly.toml") -> LoadedConfig:
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


def diag(loaded: LoadedConfig, path_str: str) -> Diagnostic:
    found = [d for d in loaded.diagnostics if d.path_str == path_str]
    assert len(found) == 1, f"expected one diagnostic at {path_str}, got {loaded.diagnostics}"
    return found[0]


def test_normalize_does_not_modify_its_input() -> None:
    raw = {"mount": {"source": "d", "destination": "/d"}, "env": {"N": 1}}
    before = repr(raw)
    result, _ = norm(raw)
    assert repr(raw) == before
    assert result.data["mounts"] == [{"source": "d", "destination": "/d"}]


# --- mounts -------------------------------------------------------------------------------


def test_mounts_table_becomes_a_list_silently() -> None:
    result, diags = norm({"mounts": {"source": "data", "destination": "/data"}})
    assert result.data == {"mounts": [{"source": "data", "destination": "/data"}]}
    assert diags == []  # [mounts] as a single table is a current form, not a legacy one
    assert result.source_path(("mounts", 0, "source")) == ("mounts", "source")
    assert result.source_path(("mounts", 0)) == ("mounts",)


def test_mounts_array_is_kept_as_is() -> None:
    mounts = [
        {"source": "a", "destination": "/a", "processes": ["web"]},
        {"source": "b", "destination": "/b", "processes": ["worker"]},
    ]
    result, diags = norm({"mounts": mounts})
    assert result.data == {"mounts": mounts}
    assert diags == []
    assert result.aliases == {}
    assert result.source_path(("mounts", 1, "source")) == ("mounts", 1, "source")


def test_singular_mount_is_an_old_name_of_mounts() -> None:
    result, diags = norm({"mount": {"source": "d", "destination": "/d", "initial_size": 10}})
    assert result.data == {"mounts": [{"source": "d", "destination": "/d", "initial_size": "10gb"}]}
    d = at(diags, ("mount",))
    assert d.severity is INFO
    assert "old name of [[mounts]]" in d.message
    assert result.source_path(("mounts", 0, "destination")) == ("mount", "destination")


def test_mount_and_mounts_merge_into_one_list() -> None:
    result, _ = norm(
        {
            "mounts": [{"source": "a", "destination": "/a", "processes": ["web"]}],
            "mount": {"source": "b", "destination": "/b", "processes": ["worker"]},
        }
    )
    assert [m["source"] for m in result.data["mounts"]] == ["a", "b"]
    assert "mount" not in result.data
    assert result.source_path(("mounts", 1, "source")) == ("mount", "source")
    assert result.source_path(("mounts", 0, "source")) == ("mounts", 0, "source")


@pytest.mark.parametrize(
    ("value", "canonical"), [(10, "10gb"), ("30GB", "30gb"), ("1500mb", "1500mb"), (1.5, "1500mb")]
)
def test_mount_initial_size_gets_units(value: object, canonical: str) -> None:
    result, diags = norm({"mounts": [{"source": "d", "destination": "/d", "initial_size": value}]})
    assert result.data["mounts"][0]["initial_size"] == canonical
    assert diags == []


def test_unreadable_initial_size_is_an_error_and_removed() -> None:
    result, diags = norm({"mounts": [{"source": "d", "destination": "/d", "initial_size": "big"}]})
    assert "initial_size" not in result.data["mounts"][0]
    d = at(diags, ("mounts", 0, "initial_size"))
    assert d.severity is ERROR
    assert "mount 'd' has an unreadable initial_size" in d.message


def test_bare_auto_extend_size_is_read_as_gigabytes_with_a_warning() -> None:
    mount = {"source": "d", "destination": "/d", "auto_extend_size_increment": 2}
    result, diags = norm({"mounts": [mount]})
    assert result.data["mounts"][0]["auto_extend_size_increment"] == "2gb"
    d = at(diags, ("mounts", 0, "auto_extend_size_increment"))
    assert d.severity is WARNING
    assert "flyctl rejects numbers here" in d.message


def test_mount_encrypted_is_dropped_with_a_warning() -> None:
    result, diags = norm({"mounts": [{"source": "d", "destination": "/d", "encrypted": True}]})
    assert result.data["mounts"] == [{"source": "d", "destination": "/d"}]
    d = at(diags, ("mounts", 0, "encrypted"))
    assert d.severity is WARNING
    assert "encrypted by default" in d.message


def test_non_table_list_items_are_errors_and_dropped() -> None:
    result, diags = norm({"mounts": ["x", {"source": "d", "destination": "/d"}]})
    assert result.data["mounts"] == [{"source": "d", "destination": "/d"}]
    d = at(diags, ("mounts", 0))
    assert d.severity is ERROR
    assert 'must be a table, not the string "x"' in d.message


# --- vm ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[vm]\nmemory = 512\n", "vm"),
        ("[[vm]]\nmemory = 512\n", "vm"),
        ("[compute]\nmemory = 512\n", "compute"),
        ("[[compute]]\nmemory = 512\n", "compute"),
        ("[computes]\nmemory = 512\n", "computes"),
    ],
)
def test_vm_spellings_become_a_vm_list_with_memory_in_mb(text: str, key: str) -> None:
    result, diags = norm(text)
    assert result.data == {"vm": [{"memory": "512mb"}]}
    if key == "vm":
        assert diags == []
    else:
        d = at(diags, (key,))
        assert d.severity is INFO
        assert f"[{key}] is an old name of [[vm]]" in d.message
        assert result.source_path(("vm", 0, "memory"))[0] == key


@pytest.mark.parametrize(
    ("memory", "canonical"),
    [
        (512, "512mb"),
        (1024, "1gb"),
        (2048, "2gb"),
        ("1GB", "1gb"),
        ("512MB", "512mb"),
        (1536, "1536mb"),
    ],
)
def test_vm_memory_is_written_with_units(memory: object, canonical: str) -> None:
    result, diags = norm({"vm": [{"memory": memory}]})
    assert result.data["vm"][0]["memory"] == canonical
    assert diags == []


def test_vm_and_compute_merge_in_order() -> None:
    result, _ = norm({"vm": [{"cpus": 1}], "compute": {"memory": 256}})
    assert result.data == {"vm": [{"cpus": 1}, {"memory": "256mb"}]}
    assert result.source_path(("vm", 1, "memory")) == ("compute", "memory")
    assert result.source_path(("vm", 0, "cpus")) == ("vm", 0, "cpus")


@pytest.mark.parametrize(
    ("memory", "phrase"),
    [(0, "must be more than 0"), ("lots", '"lots" is not a size'), (True, "is not a size")],
)
def test_bad_vm_memory_is_an_error_and_removed(memory: object, phrase: str) -> None:
    result, diags = norm({"vm": {"memory": memory, "cpus": 2}})
    assert result.data == {"vm": [{"cpus": 2}]}
    d = at(diags, ("vm", 0, "memory"))
    assert d.severity is ERROR
    assert phrase in d.message


def test_vm_kernel_args_string_is_shell_split() -> None:
    result, _ = norm({"vm": {"kernel_args": "no-hlt=true quiet"}})
    assert result.data["vm"][0]["kernel_args"] == ["no-hlt=true", "quiet"]


def test_release_command_vm_memory_gets_units() -> None:
    result, diags = norm({"deploy": {"release_command_vm": {"memory": 1024}}})
    assert result.data["deploy"]["release_command_vm"] == {"memory": "1gb"}
    assert diags == []


# --- metrics -----------------------------------------------------------------------------


def test_metrics_table_becomes_a_list() -> None:
    result, diags = norm({"metrics": {"port": 9091, "path": "/metrics"}})
    assert result.data == {"metrics": [{"port": 9091, "path": "/metrics"}]}
    assert diags == []
    assert result.source_path(("metrics", 0, "port")) == ("metrics", "port")


def test_singular_metric_is_an_old_name_of_metrics() -> None:
    result, diags = norm({"metric": {"port": 9091, "path": "/metrics"}})
    assert result.data == {"metrics": [{"port": 9091, "path": "/metrics"}]}
    d = at(diags, ("metric",))
    assert d.severity is INFO
    assert "[metric] is an old name of [[metrics]]" in d.message


# --- auto_stop_machines ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "word"), [(True, "stop"), (False, "off")])
def test_auto_stop_machines_booleans(value: bool, word: str) -> None:
    result, diags = norm(
        {
            "http_service": {"internal_port": 8080, "auto_stop_machines": value},
            "services": [{"internal_port": 9000, "auto_stop_machines": value}],
        }
    )
    assert result.data["http_service"]["auto_stop_machines"] == word
    assert result.data["services"][0]["auto_stop_machines"] == word
    for path in (("http_service", "auto_stop_machines"), ("services", 0, "auto_stop_machines")):
        d = at(diags, path)
        assert d.severity is INFO
        assert f'legacy spelling of "{word}"' in d.message


@pytest.mark.parametrize("value", ["off", "stop", "suspend", "false"])
def test_auto_stop_machines_strings_are_left_for_the_type_check(value: str) -> None:
    result, diags = norm({"http_service": {"auto_stop_machines": value}})
    assert result.data["http_service"]["auto_stop_machines"] == value
    assert diags == []


# --- env ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text", "kind"),
    [
        (1, "1", "the number 1"),
        (True, "true", "the boolean true"),
        (False, "false", "the boolean false"),
        (1.5, "1.5", "the number 1.5"),
        (3.0, "3", "the number 3.0"),
    ],
)
def test_env_non_string_values_are_coerced_with_a_warning(
    value: object, text: str, kind: str
) -> None:
    result, diags = norm({"env": {"OK": "x", "N": value}})
    assert result.data["env"] == {"OK": "x", "N": text}
    d = at(diags, ("env", "N"))
    assert d.severity is WARNING
    assert kind in d.message
    assert f'read as "{text}"' in d.message
    assert len(diags) == 1


@pytest.mark.parametrize("value", [[1, 2], {"a": "b"}])
def test_env_tables_and_lists_are_errors_and_removed(value: object) -> None:
    result, diags = norm({"env": {"OK": "x", "BAD": value}})
    assert result.data["env"] == {"OK": "x"}
    d = at(diags, ("env", "BAD"))
    assert d.severity is ERROR
    assert "env.BAD must be a string" in d.message


def test_env_list_of_tables_is_merged() -> None:
    result, diags = norm("[[env]]\nA = '1'\n[[env]]\nB = '2'\nC = 3\n")
    assert result.data["env"] == {"A": "1", "B": "2", "C": "3"}
    d = at(diags, ("env",))
    assert d.severity is INFO
    assert "merged into one [env] table" in d.message
    assert at(diags, ("env", "C")).severity is WARNING
    assert result.source_path(("env", "B")) == ("env", 1, "B")
    assert result.source_path(("env", "A")) == ("env", 0, "A")


def test_env_list_with_a_non_table_is_an_error() -> None:
    result, diags = norm({"env": [{"A": "1"}, "B=2"]})
    assert result.data["env"] == {"A": "1"}
    d = at(diags, ("env", 1))
    assert d.severity is ERROR
    assert "env[1] must be a table" in d.message


# --- processes ---------------------------------------------------------------------------


def test_empty_processes_list_is_removed_with_a_warning() -> None:
    result, diags = norm({"app": "a", "processes": []})
    assert result.data == {"app": "a"}
    d = at(diags, ("processes",))
    assert d.severity is WARNING
    assert "one process group, app" in d.message


def test_processes_list_of_empty_tables_is_removed_too() -> None:
    result, diags = norm({"processes": [{}]})
    assert "processes" not in result.data
    assert at(diags, ("processes",)).severity is WARNING


def test_processes_list_with_name_and_command_becomes_a_map() -> None:
    text = "[[processes]]\nname = 'web'\ncommand = './web'\n[[processes]]\nname = 'worker'\n"
    result, diags = norm(text)
    assert result.data == {"processes": {"web": "./web", "worker": ""}}
    d = at(diags, ("processes",))
    assert d.severity is INFO
    assert "old form of [processes]" in d.message
    assert result.source_path(("processes", "worker")) == ("processes", 1)


def test_process_without_a_name_is_an_error() -> None:
    result, diags = norm({"processes": [{"command": "x"}, {"name": "web", "command": "w"}]})
    assert result.data["processes"] == {"web": "w"}
    d = at(diags, ("processes", 0))
    assert d.severity is ERROR
    assert "has no name" in d.message


# --- build -------------------------------------------------------------------------------


def test_build_target_is_spelled_with_a_dash() -> None:
    result, diags = norm({"build": {"build_target": "prod"}})
    assert result.data == {"build": {"build-target": "prod"}}
    d = at(diags, ("build", "build_target"))
    assert d.severity is INFO
    assert "build-target" in d.message
    assert result.source_path(("build", "build-target")) == ("build", "build_target")


def test_build_target_with_dash_wins_over_underscore() -> None:
    result, _ = norm({"build": {"build_target": "old", "build-target": "new"}})
    assert result.data == {"build": {"build-target": "new"}}


# --- experimental ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["cmd", "entrypoint", "exec"])
def test_experimental_string_becomes_one_element_list(key: str) -> None:
    result, diags = norm({"experimental": {key: "/app/run"}})
    assert result.data["experimental"][key] == ["/app/run"]
    assert diags == []


@pytest.mark.parametrize("key", ["cmd", "entrypoint", "exec"])
def test_experimental_string_with_a_space_is_not_split_and_warns(key: str) -> None:
    result, diags = norm({"experimental": {key: "bundle exec puma"}})
    assert result.data["experimental"][key] == ["bundle exec puma"]
    d = at(diags, ("experimental", key))
    assert d.severity is WARNING
    assert 'single program named "bundle exec puma"' in d.message
    assert "write a list" in d.message


def test_experimental_list_is_kept() -> None:
    result, diags = norm({"experimental": {"cmd": ["bundle", "exec", "puma"]}})
    assert result.data["experimental"]["cmd"] == ["bundle", "exec", "puma"]
    assert diags == []


def test_experimental_kill_timeout_moves_to_the_top_level_in_seconds() -> None:
    result, diags = norm({"experimental": {"kill_timeout": 30}})
    assert result.data == {"experimental": {}, "kill_timeout": "30s"}
    d = at(diags, ("experimental", "kill_timeout"))
    assert d.severity is INFO
    assert "old place of the top-level kill_timeout" in d.message
    assert result.source_path(("kill_timeout",)) == ("experimental", "kill_timeout")


def test_top_level_kill_timeout_wins_over_experimental() -> None:
    result, _ = norm({"kill_timeout": 10, "experimental": {"kill_timeout": 30}})
    assert result.data["kill_timeout"] == "10s"
    assert "kill_timeout" not in result.data["experimental"]
    assert result.source_path(("kill_timeout",)) == ("kill_timeout",)


def test_experimental_metrics_port_and_path_become_metrics() -> None:
    result, diags = norm({"experimental": {"metrics_port": 9091, "metrics_path": "/m"}})
    assert result.data["metrics"] == [{"port": 9091, "path": "/m"}]
    assert result.data["experimental"] == {}
    d = at(diags, ("experimental", "metrics_port"))
    assert d.severity is INFO
    assert result.source_path(("metrics", 0, "port")) == ("experimental", "metrics_port")
    assert result.source_path(("metrics", 0, "path")) == ("experimental", "metrics_path")


def test_experimental_metrics_port_does_not_replace_metrics() -> None:
    result, _ = norm(
        {"experimental": {"metrics_port": 1}, "metrics": {"port": 9091, "path": "/metrics"}}
    )
    assert result.data["metrics"] == [{"port": 9091, "path": "/metrics"}]
    assert result.data["experimental"] == {}


@pytest.mark.parametrize(
    ("key", "value", "phrase"),
    [
        ("allowed_public_ports", [], "public ports come from [[services.ports]]"),
        ("private_network", True, "every app is on its private network"),
    ],
)
def test_apps_v1_experimental_keys_are_dropped_with_a_warning(
    key: str, value: object, phrase: str
) -> None:
    result, diags = norm({"experimental": {key: value, "cmd": ["x"]}})
    assert result.data["experimental"] == {"cmd": ["x"]}
    d = at(diags, ("experimental", key))
    assert d.severity is WARNING
    assert phrase in d.message


def test_enable_consul_is_kept_but_warned_about() -> None:
    result, diags = norm({"experimental": {"enable_consul": True}})
    assert result.data["experimental"] == {"enable_consul": True}
    assert at(diags, ("experimental", "enable_consul")).severity is WARNING


def test_org_is_dropped_with_a_warning() -> None:
    result, diags = norm({"app": "a", "org": "personal"})
    assert result.data == {"app": "a"}
    assert at(diags, ("org",)).severity is WARNING


# --- services ----------------------------------------------------------------------------


def test_service_ports_written_as_strings_become_numbers() -> None:
    service = {
        "internal_port": "8080",
        "ports": [{"port": "80"}, {"start_port": " 9000 ", "end_port": "9010"}],
    }
    result, diags = norm({"services": [service]})
    assert result.data["services"][0] == {
        "internal_port": 8080,
        "ports": [{"port": 80}, {"start_port": 9000, "end_port": 9010}],
    }
    for path in (
        ("services", 0, "internal_port"),
        ("services", 0, "ports", 0, "port"),
        ("services", 0, "ports", 1, "start_port"),
    ):
        d = at(diags, path)
        assert d.severity is INFO
        assert "a number written as a string" in d.message


def test_http_service_internal_port_string_becomes_a_number() -> None:
    result, diags = norm({"http_service": {"internal_port": "3000"}})
    assert result.data["http_service"]["internal_port"] == 3000
    assert at(diags, ("http_service", "internal_port")).severity is INFO


def test_port_string_that_is_not_a_number_is_left_for_the_type_check() -> None:
    result, diags = norm({"services": [{"internal_port": "eighty"}]})
    assert result.data["services"][0]["internal_port"] == "eighty"
    assert diags == []


@pytest.mark.parametrize(("text", "soft", "hard"), [("12,23", 12, 23), (" 5 , 10 ", 5, 10)])
def test_concurrency_string_is_the_old_soft_hard_form(text: str, soft: int, hard: int) -> None:
    result, diags = norm({"services": [{"internal_port": 8080, "concurrency": text}]})
    assert result.data["services"][0]["concurrency"] == {
        "type": "requests",
        "soft_limit": soft,
        "hard_limit": hard,
    }
    d = at(diags, ("services", 0, "concurrency"))
    assert d.severity is INFO
    assert 'type = "requests"' in d.message


@pytest.mark.parametrize("text", ["12", "a,b", "12,", ""])
def test_unreadable_concurrency_string_is_an_error_and_removed(text: str) -> None:
    result, diags = norm({"services": [{"internal_port": 8080, "concurrency": text}]})
    assert "concurrency" not in result.data["services"][0]
    d = at(diags, ("services", 0, "concurrency"))
    assert d.severity is ERROR
    assert 'old "soft,hard" form' in d.message


def test_concurrency_as_a_bare_number_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[services]]\n"  # 2
        "  internal_port = 8080\n"  # 3
        "  concurrency = 12\n"  # 4
        "  [[services.ports]]\n"  # 5
        "    port = 80\n",  # 6
    )
    d = diag(loaded, "services[0].concurrency")
    assert d.severity is ERROR
    assert "must be a table, not the number 12" in d.message
    assert d.line == 4
    assert not loaded.valid
    assert loaded.config.services is not None
    assert loaded.config.services[0].concurrency is None


def test_an_empty_ports_list_is_the_same_as_none() -> None:
    # `ports = []` keeps the [[services]] entry (the table is not empty), with no ports; it is
    # how `config show` writes an entry whose keys were all unknown, so it must read back so
    result, diags = norm({"services": [{"ports": []}, {"internal_port": 8080, "ports": []}]})
    assert result.data["services"] == [{}, {"internal_port": 8080}]
    assert diags == []


def test_empty_services_are_dropped() -> None:
    result, diags = norm({"services": [{}, {"internal_port": 8080}]})
    assert result.data["services"] == [{"internal_port": 8080}]
    d = at(diags, ("services", 0))
    assert d.severity is INFO
    assert "empty [[services]] table is ignored" in d.message
    assert result.source_path(("services", 0, "internal_port")) == (
        "services",
        1,
        "internal_port",
    )


def test_only_empty_services_remove_the_key() -> None:
    result, _ = norm({"app": "a", "services": [{}]})
    assert result.data == {"app": "a"}


def test_script_checks_are_dropped_with_a_warning() -> None:
    service = {"internal_port": 8080, "script_checks": [{"command": "/bin/check"}]}
    result, diags = norm({"services": [service]})
    assert result.data["services"] == [{"internal_port": 8080}]
    d = at(diags, ("services", 0, "script_checks"))
    assert d.severity is WARNING
    assert "Nomad-era" in d.message


def test_empty_check_lists_are_removed() -> None:
    service = {"internal_port": 8080, "tcp_checks": [], "http_checks": []}
    result, diags = norm({"services": [service]})
    assert result.data["services"] == [{"internal_port": 8080}]
    assert diags == []


# --- check durations ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp_checks", "http_checks"])
def test_service_check_bare_numbers_are_milliseconds(kind: str) -> None:
    check = {"interval": 10000, "timeout": 2000, "grace_period": 500}
    result, diags = norm({"services": [{"internal_port": 8080, kind: [check]}]})
    assert result.data["services"][0][kind] == [
        {"interval": "10s", "timeout": "2s", "grace_period": "500ms"}
    ]
    assert diags == []  # flyctl reads these as milliseconds too


def test_top_level_check_bare_numbers_are_milliseconds() -> None:
    result, diags = norm({"checks": {"alive": {"type": "tcp", "interval": 15000, "timeout": 1}}})
    assert result.data["checks"]["alive"]["interval"] == "15s"
    assert result.data["checks"]["alive"]["timeout"] == "1ms"
    assert diags == []


def test_http_service_check_bare_numbers_are_milliseconds_with_a_warning() -> None:
    check = {"interval": 10000, "timeout": "2s"}
    result, diags = norm({"http_service": {"internal_port": 8080, "checks": [check]}})
    assert result.data["http_service"]["checks"] == [{"interval": "10s", "timeout": "2s"}]
    d = at(diags, ("http_service", "checks", 0, "interval"))
    assert d.severity is WARNING
    assert "milliseconds" in d.message
    assert "flyctl reads it as nanoseconds" in d.message
    assert 'write "10s"' in d.message
    assert len(diags) == 1  # the string timeout is fine


def test_http_service_checks_table_becomes_a_list() -> None:
    result, _ = norm({"http_service": {"checks": {"interval": "10s"}}})
    assert result.data["http_service"]["checks"] == [{"interval": "10s"}]


def test_empty_duration_string_means_unset() -> None:
    result, diags = norm({"checks": {"c": {"type": "tcp", "interval": ""}}})
    assert result.data["checks"]["c"] == {"type": "tcp"}
    assert diags == []


@pytest.mark.parametrize(
    ("value", "phrase"),
    [(True, "not the boolean true"), ("10x", '"10x" is not a duration'), (-5, "not be negative")],
)
def test_unreadable_check_duration_is_an_error_and_removed(value: object, phrase: str) -> None:
    result, diags = norm({"checks": {"c": {"type": "tcp", "interval": value}}})
    assert result.data["checks"]["c"] == {"type": "tcp"}
    d = at(diags, ("checks", "c", "interval"))
    assert d.severity is ERROR
    assert phrase in d.message


@pytest.mark.parametrize("key", ["wait_timeout", "release_command_timeout"])
def test_deploy_timeouts_bare_numbers_are_seconds_with_a_warning(key: str) -> None:
    result, diags = norm({"deploy": {key: 300}})
    assert result.data["deploy"][key] == "5m"
    d = at(diags, ("deploy", key))
    assert d.severity is WARNING
    assert "seconds" in d.message
    assert "flyctl reads it as nanoseconds" in d.message


def test_deploy_timeout_strings_are_canonicalised_silently() -> None:
    result, diags = norm({"deploy": {"wait_timeout": "600s"}})
    assert result.data["deploy"]["wait_timeout"] == "10m"
    assert diags == []


def test_machine_check_kill_timeout_bare_number_is_seconds_with_a_warning() -> None:
    check = {"command": "curl x", "kill_timeout": 5}
    result, diags = norm({"services": [{"internal_port": 8080, "machine_checks": [check]}]})
    normalized = result.data["services"][0]["machine_checks"][0]
    assert normalized == {"command": ["curl x"], "kill_timeout": "5s"}
    d = at(diags, ("services", 0, "machine_checks", 0, "kill_timeout"))
    assert d.severity is WARNING


# --- headers -----------------------------------------------------------------------------


def test_headers_as_a_list_of_name_value_tables() -> None:
    check = {
        "interval": "10s",
        "headers": [
            {"name": "X-Forwarded-Proto", "value": "https"},
            {"name": "X-Count", "value": 2},
        ],
    }
    result, diags = norm({"services": [{"internal_port": 8080, "http_checks": [check]}]})
    headers = result.data["services"][0]["http_checks"][0]["headers"]
    # The string value must be kept; non-strings are stringified (flyctl's patches.go).
    assert headers == {"X-Forwarded-Proto": "https", "X-Count": "2"}
    assert diags == []
    hpath = ("services", 0, "http_checks", 0, "headers")
    assert result.source_path((*hpath, "X-Count")) == (*hpath, 1)


def test_headers_list_item_without_a_name_is_an_error() -> None:
    check = {"headers": [{"value": "x"}]}
    result, diags = norm({"checks": {"c": {"type": "http", **check}}})
    assert result.data["checks"]["c"]["headers"] == {}
    d = at(diags, ("checks", "c", "headers", 0))
    assert d.severity is ERROR
    assert "must be a table with name and value" in d.message


def test_headers_table_values_are_stringified() -> None:
    result, diags = norm({"checks": {"c": {"type": "http", "headers": {"A": 1, "B": "b"}}}})
    assert result.data["checks"]["c"]["headers"] == {"A": "1", "B": "b"}
    assert diags == []


def test_headers_with_several_values_keep_the_first_with_a_warning() -> None:
    result, diags = norm({"checks": {"c": {"type": "http", "headers": {"A": ["1", "2"]}}}})
    assert result.data["checks"]["c"]["headers"] == {"A": "1"}
    d = at(diags, ("checks", "c", "headers", "A"))
    assert d.severity is WARNING
    assert "only the first is sent" in d.message


def test_headers_that_are_not_a_table_are_an_error() -> None:
    result, diags = norm({"checks": {"c": {"type": "http", "headers": "A: 1"}}})
    assert "headers" not in result.data["checks"]["c"]
    assert at(diags, ("checks", "c", "headers")).severity is ERROR


# --- kill_timeout ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "canonical"),
    [(1.5, "1s"), (1.9, "1s"), (10, "10s"), (120, "2m"), (0, "0s"), ("1m30s", "1m30s")],
)
def test_kill_timeout_bare_numbers_are_whole_seconds(value: object, canonical: str) -> None:
    result, diags = norm({"kill_timeout": value})
    assert result.data["kill_timeout"] == canonical
    assert diags == []


@pytest.mark.parametrize("value", [True, "soon", -1, [5]])
def test_unreadable_kill_timeout_is_an_error_and_removed(value: object) -> None:
    result, diags = norm({"app": "a", "kill_timeout": value})
    assert result.data == {"app": "a"}
    assert at(diags, ("kill_timeout",)).severity is ERROR


# --- top-level checks as a list ----------------------------------------------------------


def test_checks_list_with_names_becomes_a_map() -> None:
    text = (
        "[[checks]]\nname = 'alive'\ntype = 'tcp'\nport = 8080\ninterval = 15000\n"
        "[[checks]]\nname = 'web'\ntype = 'http'\nport = 8080\npath = '/'\n"
    )
    result, diags = norm(text)
    assert result.data["checks"] == {
        "alive": {"type": "tcp", "port": 8080, "interval": "15s"},
        "web": {"type": "http", "port": 8080, "path": "/"},
    }
    d = at(diags, ("checks",))
    assert d.severity is INFO
    assert "list form of [checks.NAME]" in d.message
    assert result.source_path(("checks", "web", "path")) == ("checks", 1, "path")


def test_checks_list_item_without_a_name_is_an_error() -> None:
    result, diags = norm({"checks": [{"type": "tcp"}]})
    assert result.data["checks"] == {}
    d = at(diags, ("checks", 0))
    assert d.severity is ERROR
    assert "needs a name" in d.message


def test_checks_list_with_a_duplicate_name_is_an_error() -> None:
    result, diags = norm({"checks": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]})
    assert result.data["checks"] == {"a": {"port": 1}}
    d = at(diags, ("checks", 1))
    assert d.severity is ERROR
    assert "two top-level checks are named 'a'" in d.message


def test_empty_checks_list_is_removed() -> None:
    result, diags = norm({"app": "a", "checks": []})
    assert result.data == {"app": "a"}
    assert diags == []


# --- Normalized.source_path --------------------------------------------------------------


def test_source_path_uses_the_longest_aliased_prefix() -> None:
    n = Normalized(
        data={},
        aliases={
            ("metrics", 0): ("metrics",),
            ("metrics", 0, "port"): ("experimental", "metrics_port"),
        },
    )
    assert n.source_path(("metrics", 0, "port")) == ("experimental", "metrics_port")
    assert n.source_path(("metrics", 0, "path")) == ("metrics", "path")
    assert n.source_path(("metrics", 0)) == ("metrics",)
    assert n.source_path(("vm", 0, "memory")) == ("vm", 0, "memory")
    assert n.source_path(()) == ()


# --- end to end: the loader and line numbers ---------------------------------------------


def test_mounts_table_error_points_at_its_line(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "\n"  # 2
        "[mounts]\n"  # 3
        '  source = "data"\n'  # 4
        '  destination = "/"\n',  # 5
    )
    d = diag(loaded, "mounts[0].destination")
    assert d.severity is ERROR
    assert d.path == ("mounts", 0, "destination")
    assert "destination cannot be /" in d.message
    assert d.line == 5


def test_singular_mount_info_and_error_lines(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[mount]\n"  # 2
        '  source = "d"\n'  # 3
        '  destination = "/d"\n'  # 4
        "  snapshot_retention = 99\n",  # 5
    )
    info = diag(loaded, "mount")
    assert (info.severity, info.line) == (INFO, 2)
    error = diag(loaded, "mounts[0].snapshot_retention")
    assert (error.severity, error.line) == (ERROR, 5)


def test_compute_table_errors_point_at_the_compute_keys(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[compute]\n"  # 2
        "  memory = 512\n"  # 3
        "  cpus = 3\n",  # 4
    )
    assert diag(loaded, "compute").line == 2
    d = diag(loaded, "vm[0].cpus")
    assert (d.severity, d.line) == (ERROR, 4)
    assert loaded.config.vm is not None
    assert loaded.config.vm[0].memory == "512mb"


def test_vm_memory_error_line(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[vm]\n  cpus = 1\n  memory = 0\n')
    d = diag(loaded, "vm[0].memory")
    assert (d.severity, d.line) == (ERROR, 4)
    assert "must be more than 0" in d.message


def test_env_list_errors_point_into_the_right_table(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[env]]\n"  # 2
        '  A = "1"\n'  # 3
        "[[env]]\n"  # 4
        '  FLY_B = "2"\n'  # 5
        "  N = 7\n",  # 6
    )
    assert diag(loaded, "env").line == 2
    fly = diag(loaded, "env.FLY_B")
    assert (fly.severity, fly.line) == (WARNING, 5)
    coerced = diag(loaded, "env.N")
    assert (coerced.severity, coerced.line) == (WARNING, 6)
    assert loaded.config.env == {"A": "1", "FLY_B": "2", "N": "7"}


def test_env_non_string_warning_line(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[env]\n  PORT = 8080\n  DEBUG = true\n')
    port = diag(loaded, "env.PORT")
    assert (port.severity, port.line) == (WARNING, 3)
    debug = diag(loaded, "env.DEBUG")
    assert (debug.severity, debug.line) == (WARNING, 4)
    assert loaded.config.env == {"PORT": "8080", "DEBUG": "true"}
    assert loaded.valid


def test_checks_list_error_points_at_the_list_item(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[checks]]\n"  # 2
        '  name = "alive"\n'  # 3
        '  type = "tcp"\n'  # 4
        "  port = 8080\n"  # 5
        "  interval = 1000\n",  # 6
    )
    assert diag(loaded, "checks").line == 2
    d = diag(loaded, "checks.alive.interval")
    assert d.severity is ERROR
    assert "minimum is 2 seconds" in d.message
    assert d.line == 6


def test_experimental_kill_timeout_error_points_at_experimental(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[experimental]\n"  # 2
        "  kill_timeout = 600\n",  # 3
    )
    info = diag(loaded, "experimental.kill_timeout")
    assert (info.severity, info.line) == (INFO, 3)
    error = diag(loaded, "kill_timeout")
    assert error.severity is ERROR
    assert "maximum kill_timeout is 300 seconds" in error.message
    assert error.line == 3
    assert loaded.config.kill_timeout == "10m"


def test_experimental_metrics_port_error_points_at_metrics_port(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[experimental]\n"  # 2
        '  metrics_path = "/metrics"\n'  # 3
        "  metrics_port = 0\n",  # 4
    )
    d = diag(loaded, "metrics[0].port")
    assert (d.severity, d.line) == (ERROR, 4)


def test_dropped_empty_service_does_not_shift_lines(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[services]]\n"  # 2
        "\n"  # 3
        "[[services]]\n"  # 4
        "  internal_port = 8080\n"  # 5
        "  [[services.ports]]\n"  # 6
        "    port = 0\n",  # 7
    )
    error = diag(loaded, "services[0].ports[0].port")
    assert (error.severity, error.line) == (ERROR, 7)
    info = diag(loaded, "services[0]")
    assert info.severity is INFO
    assert "empty [[services]] table is ignored" in info.message
    assert info.line == 2  # the empty table, not the service that took its index


def test_non_table_in_a_list_error_points_at_that_element(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "mounts = [\n"  # 2
        '  "data",\n'  # 3
        '  { source = "d", destination = "/d" },\n'  # 4
        "]\n",  # 5
    )
    d = diag(loaded, "mounts[0]")
    assert d.severity is ERROR
    assert 'must be a table, not the string "data"' in d.message
    assert d.line == 3  # the string, not the table that took its index


def test_script_checks_warning_after_a_dropped_service(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[services]]\n"  # 2
        "[[services]]\n"  # 3
        "  internal_port = 8080\n"  # 4
        "  [[services.ports]]\n"  # 5
        "    port = 80\n"  # 6
        '    handlers = ["http"]\n'  # 7
        "  [[services.script_checks]]\n"  # 8
        '    command = "/bin/check"\n',  # 9
    )
    d = diag(loaded, "services[0].script_checks")
    assert (d.severity, d.line) == (WARNING, 8)


def test_http_service_check_bare_number_warning_line(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[http_service]\n"  # 2
        "  internal_port = 8080\n"  # 3
        "  [[http_service.checks]]\n"  # 4
        "    interval = 10000\n"  # 5
        '    path = "/"\n',  # 6
    )
    d = diag(loaded, "http_service.checks[0].interval")
    assert (d.severity, d.line) == (WARNING, 5)
    assert loaded.config.http_service is not None
    assert loaded.config.http_service.checks is not None
    assert loaded.config.http_service.checks[0].interval == "10s"


def test_deploy_wait_timeout_warning_line(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[deploy]\n  wait_timeout = 300\n')
    d = diag(loaded, "deploy.wait_timeout")
    assert (d.severity, d.line) == (WARNING, 3)
    assert loaded.config.deploy is not None
    assert loaded.config.deploy.wait_timeout == "5m"


def test_empty_processes_warning_line(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\nprocesses = []\n')
    d = diag(loaded, "processes")
    assert (d.severity, d.line) == (WARNING, 2)
    assert loaded.config.processes is None
    assert loaded.valid


def test_processes_list_command_error_points_at_its_table(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[processes]]\n"  # 2
        '  name = "web"\n'  # 3
        '  command = "run \'x"\n',  # 4
    )
    assert loaded.config.processes == {"web": "run 'x"}
    d = diag(loaded, "processes.web")
    assert d.severity is ERROR
    assert "can't shell split" in d.message
    assert d.line == 2


def test_build_target_type_error_points_at_build_target(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[build]\n  build_target = 5\n')
    info = diag(loaded, "build.build_target")
    assert (info.severity, info.line) == (INFO, 3)
    error = diag(loaded, "build.build-target")
    assert (error.severity, error.line) == (ERROR, 3)


def test_legacy_service_forms_load_into_the_model(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'
        "[[services]]\n"
        '  internal_port = "8080"\n'
        '  concurrency = "12,23"\n'
        "  auto_stop_machines = true\n"
        "  [[services.ports]]\n"
        '    port = "443"\n'
        '    handlers = ["tls", "http"]\n'
        "  [[services.http_checks]]\n"
        "    interval = 10000\n"
        "    timeout = 2000\n"
        '    path = "/"\n'
        "    [[services.http_checks.headers]]\n"
        '      name = "X-Forwarded-Proto"\n'
        '      value = "https"\n',
    )
    assert loaded.valid, loaded.diagnostics
    assert {d.severity for d in loaded.diagnostics} == {INFO}
    assert loaded.config.services is not None
    svc = loaded.config.services[0]
    assert svc.internal_port == 8080
    assert svc.auto_stop_machines == "stop"
    assert svc.concurrency is not None
    assert (svc.concurrency.type, svc.concurrency.soft_limit, svc.concurrency.hard_limit) == (
        "requests",
        12,
        23,
    )
    assert svc.ports is not None
    assert svc.ports[0].port == 443
    assert svc.http_checks is not None
    check = svc.http_checks[0]
    assert (check.interval, check.timeout) == ("10s", "2s")
    assert check.headers == {"X-Forwarded-Proto": "https"}


def test_check_source_reports_the_same_as_load_config(tmp_path: Path) -> None:
    path = tmp_path / "fly.toml"
    path.write_text('app = "a"\nkill_timeout = 1.5\n[metric]\n  port = 9091\n  path = "/m"\n')
    via_source = check_source(read_config(path))
    via_loader = load_config(path)
    assert via_source.diagnostics == via_loader.diagnostics
    assert via_source.config.kill_timeout == "1s"
    assert via_source.config.metrics is not None
    assert via_source.config.metrics[0].port == 9091
    d = diag(via_source, "metric")
    assert (d.severity, d.line) == (INFO, 3)


def test_legacy_forms_in_json_report_json_lines(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        "{\n"  # 1
        '  "app": "a",\n'  # 2
        '  "mount": {\n'  # 3
        '    "source": "d",\n'  # 4
        '    "destination": "/"\n'  # 5
        "  },\n"  # 6
        '  "env": {"N": 1}\n'  # 7
        "}\n",
        name="fly.json",
    )
    assert diag(loaded, "mount").line == 3
    d = diag(loaded, "mounts[0].destination")
    assert (d.severity, d.line) == (ERROR, 5)
    env = diag(loaded, "env.N")
    assert (env.severity, env.line) == (WARNING, 7)


def test_legacy_forms_in_yaml_report_yaml_lines(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        "app: a\n"  # 1
        "vm:\n"  # 2
        "  memory: 512\n"  # 3
        "  cpus: 3\n"  # 4
        "experimental:\n"  # 5
        "  cmd: bundle exec puma\n",  # 6
        name="fly.yaml",
    )
    d = diag(loaded, "vm[0].cpus")
    assert (d.severity, d.line) == (ERROR, 4)
    cmd = diag(loaded, "experimental.cmd")
    assert (cmd.severity, cmd.line) == (WARNING, 6)
    assert loaded.config.vm is not None
    assert loaded.config.vm[0].memory == "512mb"
