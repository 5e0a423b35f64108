"""Every rule of the fly.toml reference, one focused test each, through the real loader.

Each test writes a minimal fly.toml, loads it with `load_config`, and checks the
exact diagnostic: its severity, the key path it concerns, the line it points at
and the words that tell the user what is wrong. Configs that follow a rule are
loaded too, so a rule that fires too eagerly fails as well.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from taxiway.config.diagnostics import Diagnostic, Severity
from taxiway.config.loader import LoadedConfig, load_config
from taxiway.config.units import KNOWN_SIGNALS

INFO, WARNING, ERROR = Severity.INFO, Severity.WARNING, Severity.ERROR

SERVICE = (
    "[[services]]\n"
    "  internal_port = 8080\n"
    "  [[services.ports]]\n"
    "    port = 80\n"
    '    handlers = ["http"]\n'
)


def load(tmp_path: Path, text: str, *, strategy: str | None = None) -> LoadedConfig:
    path = tmp_path / "fly.toml"
    path.write_text(text)
    return load_config(path, strategy=strategy)


def diag(loaded: LoadedConfig, path_str: str) -> Diagnostic:
    """The one diagnostic about exactly ``path_str``."""
    found = [d for d in loaded.diagnostics if d.path_str == path_str]
    assert len(found) == 1, f"expected one diagnostic at {path_str}, got {loaded.diagnostics}"
    return found[0]


def problems(loaded: LoadedConfig) -> list[Diagnostic]:
    """Warnings and errors (infos are remarks, not problems)."""
    return [d for d in loaded.diagnostics if d.severity is not INFO]


def check(
    loaded: LoadedConfig,
    path_str: str,
    severity: Severity,
    line: int,
    *phrases: str,
) -> Diagnostic:
    d = diag(loaded, path_str)
    assert d.severity is severity, d
    assert d.line == line, d
    for phrase in phrases:
        assert phrase in d.message, d
    assert d.path_str == path_str
    return d


# --- top level ---------------------------------------------------------------------------


@pytest.mark.parametrize("signal", ["SIGFOO", "SIGPIPE", "TERMINATE"])
def test_kill_signal_not_in_the_list_is_an_error(tmp_path: Path, signal: str) -> None:
    loaded = load(tmp_path, f'app = "a"\nkill_signal = "{signal}"\n')
    d = check(loaded, "kill_signal", ERROR, 2, "is not a signal the platform sends")
    assert d.path == ("kill_signal",)
    # exactly the signals taxiway accepts: the reference's list and the Machines API's SIGHUP
    options = d.message.split("options are ", 1)[1].split(", ")
    reference = ["SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGSTOP"]
    assert options == [*reference, "SIGHUP"]
    assert set(options) == set(KNOWN_SIGNALS)


@pytest.mark.parametrize(("written", "fixed"), [("sigterm", "SIGTERM"), ("term", "SIGTERM")])
def test_kill_signal_in_lower_case_is_a_warning(tmp_path: Path, written: str, fixed: str) -> None:
    loaded = load(tmp_path, f'app = "a"\n\nkill_signal = "{written}"\n')
    check(loaded, "kill_signal", WARNING, 3, f'written "{fixed}"')
    assert loaded.valid


@pytest.mark.parametrize("signal", KNOWN_SIGNALS)
def test_listed_kill_signals_are_fine(tmp_path: Path, signal: str) -> None:
    assert problems(load(tmp_path, f'app = "a"\nkill_signal = "{signal}"\n')) == []


@pytest.mark.parametrize("value", ["301", '"5m1s"', '"1h"'])
def test_kill_timeout_over_300_seconds_is_an_error(tmp_path: Path, value: str) -> None:
    loaded = load(tmp_path, f'app = "a"\nkill_timeout = {value}\n')
    check(loaded, "kill_timeout", ERROR, 2, "maximum kill_timeout is 300 seconds")


@pytest.mark.parametrize("value", ["300", '"300s"', '"5m"', "120"])
def test_kill_timeout_up_to_300_seconds_is_fine(tmp_path: Path, value: str) -> None:
    assert problems(load(tmp_path, f'app = "a"\nkill_timeout = {value}\n')) == []


def test_env_names_starting_with_fly_are_warnings(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[env]\n"  # 2
        '  LOG_LEVEL = "info"\n'  # 3
        '  FLY_REGION = "ams"\n'  # 4
        '  fly_lower = "ok"\n',  # 5
    )
    d = check(
        loaded,
        "env.FLY_REGION",
        WARNING,
        4,
        "cannot begin with FLY_ (as this could clash with the runtime environment)",
        "the platform accepts it",
    )
    assert d.path == ("env", "FLY_REGION")
    # Names are case-sensitive: only FLY_ is reserved.
    assert [x.path_str for x in problems(loaded)] == ["env.FLY_REGION"]


# --- deploy ------------------------------------------------------------------------------


def test_bluegreen_without_a_health_check_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[http_service]\n"  # 2
        "  internal_port = 8080\n"  # 3
        "[deploy]\n"  # 4
        '  strategy = "bluegreen"\n',  # 5
    )
    check(loaded, "deploy.strategy", ERROR, 5, "bluegreen strategy needs at least one health check")


@pytest.mark.parametrize(
    "checks",
    [
        '[http_service]\n  internal_port = 8080\n  [[http_service.checks]]\n    path = "/"\n',
        SERVICE + '  [[services.tcp_checks]]\n    interval = "15s"\n',
        SERVICE + '  [[services.http_checks]]\n    path = "/"\n',
        '[checks.alive]\n  type = "tcp"\n  port = 8080\n',
    ],
    ids=["http_service.checks", "services.tcp_checks", "services.http_checks", "checks"],
)
def test_bluegreen_with_a_health_check_is_fine(tmp_path: Path, checks: str) -> None:
    loaded = load(tmp_path, f'app = "a"\n[deploy]\n  strategy = "bluegreen"\n{checks}')
    assert problems(loaded) == []


@pytest.mark.parametrize("strategy", ["canary", "bluegreen"])
def test_canary_and_bluegreen_with_mounts_are_errors(tmp_path: Path, strategy: str) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[deploy]\n"  # 2
        f'  strategy = "{strategy}"\n'  # 3
        "[[mounts]]\n"  # 4
        '  source = "data"\n'  # 5
        '  destination = "/data"\n'  # 6
        '[checks.alive]\n  type = "tcp"\n  port = 8080\n',
    )
    check(
        loaded,
        "deploy.strategy",
        ERROR,
        3,
        f"the {strategy} strategy cannot be used for Machines with attached volumes",
        "group app",
    )


def test_canary_from_the_command_line_with_mounts_is_an_error(tmp_path: Path) -> None:
    text = 'app = "a"\n[[mounts]]\n  source = "data"\n  destination = "/data"\n'
    assert problems(load(tmp_path, text)) == []
    loaded = load(tmp_path, text, strategy="canary")
    d = diag(loaded, "deploy.strategy")
    assert d.severity is ERROR
    assert "canary strategy cannot be used for Machines with attached volumes" in d.message


@pytest.mark.parametrize("strategy", ["rolling", "immediate"])
def test_rolling_and_immediate_with_mounts_are_fine(tmp_path: Path, strategy: str) -> None:
    loaded = load(
        tmp_path,
        f'app = "a"\n[deploy]\n  strategy = "{strategy}"\n'
        '[[mounts]]\n  source = "data"\n  destination = "/data"\n',
    )
    assert problems(loaded) == []


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("0", "must be more than 0"),
        ("-1", "must be more than 0"),
        ("1.5", "whole number values, greater than or equal to one"),
    ],
)
def test_bad_max_unavailable_is_an_error(tmp_path: Path, value: str, phrase: str) -> None:
    loaded = load(tmp_path, f'app = "a"\n[deploy]\n  max_unavailable = {value}\n')
    check(loaded, "deploy.max_unavailable", ERROR, 3, phrase)


@pytest.mark.parametrize("value", ["0.33", "2", "1", "1.0", "0.5"])
def test_max_unavailable_count_or_fraction_is_fine(tmp_path: Path, value: str) -> None:
    assert problems(load(tmp_path, f'app = "a"\n[deploy]\n  max_unavailable = {value}\n')) == []


# --- process groups ----------------------------------------------------------------------


GHOSTS = {
    "services": (
        '[[services]]\n  processes = ["ghost"]\n  internal_port = 8080\n'
        '  [[services.ports]]\n    port = 80\n    handlers = ["http"]\n',
        "services[0].processes[0]",
        "service",
    ),
    "http_service": (
        '[http_service]\n  processes = ["ghost"]\n  internal_port = 8080\n',
        "http_service.processes[0]",
        "service",
    ),
    "mounts": (
        '[[mounts]]\n  processes = ["ghost"]\n  source = "d"\n  destination = "/d"\n',
        "mounts[0].processes[0]",
        "mount",
    ),
    "vm": (
        '[[vm]]\n  processes = ["ghost"]\n  size = "shared-cpu-1x"\n',
        "vm[0].processes[0]",
        "[[vm]] section",
    ),
    "metrics": (
        '[[metrics]]\n  processes = ["ghost"]\n  port = 9091\n  path = "/metrics"\n',
        "metrics[0].processes[0]",
        "metrics section",
    ),
    "files": (
        '[[files]]\n  processes = ["ghost"]\n  guest_path = "/etc/x"\n  raw_value = "x"\n',
        "files[0].processes[0]",
        "file",
    ),
    "restart": (
        '[[restart]]\n  processes = ["ghost"]\n  policy = "always"\n',
        "restart[0].processes[0]",
        "restart policy",
    ),
    "checks": (
        '[checks.alive]\n  processes = ["ghost"]\n  type = "tcp"\n  port = 8080\n',
        "checks.alive.processes[0]",
        "check",
    ),
}


@pytest.mark.parametrize("section", sorted(GHOSTS))
def test_processes_naming_an_undefined_group_is_an_error(tmp_path: Path, section: str) -> None:
    snippet, path_str, what = GHOSTS[section]
    # Line 1 app, 2-3 [processes]; the section header is on line 4 and processes on line 5.
    loaded = load(tmp_path, f'app = "a"\n[processes]\n  app = "run"\n{snippet}')
    d = check(
        loaded,
        path_str,
        ERROR,
        5,
        f"{what} names the process group 'ghost'",
        "no process group has that name",
        "the app defines app",
    )
    assert d.path[-2:] == ("processes", 0)


def test_undefined_group_without_processes_section_says_the_only_group_is_app(
    tmp_path: Path,
) -> None:
    loaded = load(tmp_path, 'app = "a"\n[[restart]]\n  policy = "always"\n  processes = ["web"]\n')
    check(
        loaded,
        "restart[0].processes[0]",
        ERROR,
        4,
        "'web'",
        "without [processes] the only group is app",
    )


def test_second_listed_group_is_checked_too(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[processes]\n  web = "w"\n  worker = "k"\n'
        '[[vm]]\n  processes = ["web", "wrker"]\n',
    )
    check(loaded, "vm[0].processes[1]", ERROR, 6, "'wrker'", "the app defines web, worker")


@pytest.mark.parametrize(
    ("snippet", "path_str", "label"),
    [
        (SERVICE, "services[0]", "services[0]"),
        ("[http_service]\n  internal_port = 8080\n", "http_service", "[http_service]"),
    ],
)
def test_services_must_list_processes_when_processes_exist(
    tmp_path: Path, snippet: str, path_str: str, label: str
) -> None:
    loaded = load(tmp_path, f'app = "a"\n[processes]\n  web = "w"\n  worker = "k"\n{snippet}')
    check(
        loaded,
        path_str,
        ERROR,
        5,
        f"{label} has no processes set but the app has 2 process groups defined",
    )


def test_two_mounts_for_one_group_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[processes]\n"  # 2
        '  web = "w"\n'  # 3
        '  worker = "k"\n'  # 4
        "[[mounts]]\n"  # 5
        '  source = "a"\n'  # 6
        '  destination = "/a"\n'  # 7
        '  processes = ["web", "worker"]\n'  # 8
        "[[mounts]]\n"  # 9
        '  source = "b"\n'  # 10
        '  destination = "/b"\n'  # 11
        '  processes = ["worker"]\n',  # 12
    )
    check(
        loaded,
        "mounts[1]",
        ERROR,
        9,
        "group 'worker' has more than one [[mounts]] section defined (mounts[0], mounts[1])",
    )
    assert [d.path_str for d in problems(loaded)] == ["mounts[1]"]


def test_a_mount_without_processes_lands_on_the_default_group(tmp_path: Path) -> None:
    # No "app" group: the default group is the alphabetically first one, "web".
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[processes]\n"  # 2
        '  worker = "k"\n'  # 3
        '  web = "w"\n'  # 4
        "[[mounts]]\n"  # 5
        '  source = "a"\n'  # 6
        '  destination = "/a"\n'  # 7
        '  processes = ["web"]\n'  # 8
        "[[mounts]]\n"  # 9
        '  source = "b"\n'  # 10
        '  destination = "/b"\n',  # 11
    )
    errors = [d for d in loaded.diagnostics if d.severity is ERROR]
    assert len(errors) == 1
    d = errors[0]
    assert d.path_str == "mounts[1]"
    assert d.line == 9
    assert "group 'web' has more than one [[mounts]] section" in d.message


def test_two_mounts_without_processes_in_a_single_group_app(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'
        '[[mounts]]\n  source = "a"\n  destination = "/a"\n'
        '[[mounts]]\n  source = "b"\n  destination = "/b"\n',
    )
    check(loaded, "mounts[1]", ERROR, 5, "group 'app' has more than one [[mounts]]")


def test_one_mount_per_group_is_fine(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[processes]\n  web = "w"\n  worker = "k"\n'
        '[[mounts]]\n  source = "a"\n  destination = "/a"\n  processes = ["web"]\n'
        '[[mounts]]\n  source = "b"\n  destination = "/b"\n  processes = ["worker"]\n',
    )
    assert problems(loaded) == []


# --- statics -----------------------------------------------------------------------------


def statics(n: int) -> str:
    return "".join(
        f'[[statics]]\n  guest_path = "/app/g"\n  url_prefix = "/p{i}/"\n' for i in range(n)
    )


def test_more_than_ten_statics_is_an_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n' + statics(11))
    # Each [[statics]] takes three lines after line 1; the eleventh starts on line 32.
    check(loaded, "statics[10]", ERROR, 32, "11 [[statics]]", "up to 10 mappings")


def test_ten_statics_are_fine(tmp_path: Path) -> None:
    assert problems(load(tmp_path, 'app = "a"\n' + statics(10))) == []


@pytest.mark.parametrize("second", ["/public", "/public/"])
def test_duplicate_static_url_prefix_is_an_error(tmp_path: Path, second: str) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[statics]]\n"  # 2
        '  guest_path = "/app/a"\n'  # 3
        '  url_prefix = "/public"\n'  # 4
        "[[statics]]\n"  # 5
        '  guest_path = "/app/b"\n'  # 6
        f'  url_prefix = "{second}"\n',  # 7
    )
    check(
        loaded,
        "statics[1].url_prefix",
        ERROR,
        7,
        "statics[1] and statics[0] both use url_prefix",
        "should not overlap",
    )


def test_nested_static_url_prefixes_are_fine(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[statics]]\n  guest_path = "/app/a"\n  url_prefix = "/public/foo"\n'
        '[[statics]]\n  guest_path = "/app/a"\n  url_prefix = "/public/bar"\n',
    )
    assert problems(loaded) == []


@pytest.mark.parametrize(
    ("guest", "phrase"),
    [
        ("/etc", "/etc is outside the app's folder"),
        ("/", "/ is outside the app's folder"),
        ("../secrets", "/secrets is outside the app's folder"),
        ("/app/.taxiway", "hidden folder .taxiway"),
        ("/app/.git/objects", "hidden folder .git"),
    ],
)
def test_a_static_guest_path_taxiway_will_not_serve_is_a_warning(
    tmp_path: Path, guest: str, phrase: str
) -> None:
    """Valid on the platform (a folder of the image), but not served from this host."""
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[statics]]\n"  # 2
        '  url_prefix = "/x"\n'  # 3
        f'  guest_path = "{guest}"\n',  # 4
    )
    assert loaded.valid
    check(loaded, "statics[0].guest_path", WARNING, 4, phrase, "requests under it go to the app")


def test_a_static_guest_path_of_the_image_says_which_drivers_serve_it(tmp_path: Path) -> None:
    """With a Dockerfile, a folder outside the WORKDIR is the image's: the docker driver
    serves it from the image's files; the host drivers can't (it would be the host's)."""
    (tmp_path / "Dockerfile").write_text("FROM nginx\nWORKDIR /srv\n")
    loaded = load(
        tmp_path, 'app = "a"\n[[statics]]\n  url_prefix = "/x"\n  guest_path = "/usr/share/web"\n'
    )
    check(
        loaded,
        "statics[0].guest_path",
        WARNING,
        4,
        "is a folder of the image",
        "the docker driver serves it from there",
    )


def test_a_static_guest_path_under_the_dockerfile_workdir_is_fine(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM node\nWORKDIR /srv/site\n")
    loaded = load(
        tmp_path, 'app = "a"\n[[statics]]\n  guest_path = "/srv/site/dist"\n  url_prefix = "/x"\n'
    )
    assert problems(loaded) == []


# --- files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sources", "phrase"),
    [
        ("", "needs exactly one of raw_value, local_path or secret_name"),
        (
            '  raw_value = "x"\n  secret_name = "S"\n',
            "(it has raw_value and secret_name)",
        ),
        (
            '  raw_value = "x"\n  local_path = "f.txt"\n',
            "(it has raw_value and local_path)",
        ),
    ],
    ids=["none", "raw_value+secret_name", "raw_value+local_path"],
)
def test_files_need_exactly_one_source(tmp_path: Path, sources: str, phrase: str) -> None:
    (tmp_path / "f.txt").write_text("content")
    loaded = load(tmp_path, f'app = "a"\n[[files]]\n  guest_path = "/etc/x"\n{sources}')
    d = check(loaded, "files[0]", ERROR, 2, phrase)
    assert d.path == ("files", 0)


def test_files_local_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[files]]\n  guest_path = "/etc/x"\n  local_path = "missing.txt"\n',
    )
    check(
        loaded,
        "files[0].local_path",
        ERROR,
        4,
        '"missing.txt" does not exist',
        "from the folder fly.toml is in",
    )


def test_files_local_path_is_read_from_the_fly_toml_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_dir = tmp_path / "app"
    (app_dir / "config").mkdir(parents=True)
    (app_dir / "config" / "app.yaml").write_text("key: value\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the file must be found next to fly.toml, not in the cwd
    assert not Path("config/app.yaml").exists()
    loaded = load(
        app_dir,
        'app = "a"\n[[files]]\n  guest_path = "/etc/app.yaml"\n  local_path = "config/app.yaml"\n',
    )
    assert problems(loaded) == []
    assert os.path.samefile(loaded.base_dir, app_dir)


def test_files_raw_value_that_looks_base64_is_a_warning(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[files]]\n  guest_path = "/hello.txt"\n  raw_value = "aGVsbG8gd29ybGQK"\n',
    )
    check(
        loaded,
        "files[0].raw_value",
        WARNING,
        4,
        "looks base64-encoded",
        "writes raw_value as it is",
    )
    assert loaded.valid


@pytest.mark.parametrize("raw", ["hello world", "port=8080\n", "abcd"])
def test_files_plain_raw_value_is_fine(tmp_path: Path, raw: str) -> None:
    loaded = load(
        tmp_path,
        f'app = "a"\n[[files]]\n  guest_path = "/x.txt"\n  raw_value = {json.dumps(raw)}\n',
    )
    assert problems(loaded) == []


# --- vm ----------------------------------------------------------------------------------


def test_gpus_without_gpu_kind_is_an_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[[vm]]\n  gpus = 1\n')
    check(loaded, "vm[0].gpus", ERROR, 3, "setting gpus requires also setting gpu_kind")


@pytest.mark.parametrize("kind", ["a10", "l40s", "a100-pcie-40gb", "a100-sxm4-80gb"])
def test_gpu_kind_alone_is_fine(tmp_path: Path, kind: str) -> None:
    assert problems(load(tmp_path, f'app = "a"\n[[vm]]\n  gpu_kind = "{kind}"\n')) == []


@pytest.mark.parametrize("cpus", [3, 0, 32])
def test_cpus_not_in_the_list_is_an_error(tmp_path: Path, cpus: int) -> None:
    loaded = load(tmp_path, f'app = "a"\n[[vm]]\n  cpus = {cpus}\n')
    check(loaded, "vm[0].cpus", ERROR, 3, f"is {cpus}", "valid values are 1, 2, 4, 8, or 16")


@pytest.mark.parametrize("cpus", [1, 2, 4, 8, 16])
def test_listed_cpus_are_fine(tmp_path: Path, cpus: int) -> None:
    assert problems(load(tmp_path, f'app = "a"\n[[vm]]\n  cpus = {cpus}\n')) == []


def test_unknown_cpu_kind_is_a_type_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[[vm]]\n  cpu_kind = "huge"\n')
    check(loaded, "vm[0].cpu_kind", ERROR, 3, '"performance", "shared"', 'not the string "huge"')
    assert loaded.config.vm is not None
    assert loaded.config.vm[0].cpu_kind is None


def test_unknown_restart_policy_is_an_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[[restart]]\n  policy = "sometimes"\n')
    check(
        loaded,
        "restart[0].policy",
        ERROR,
        3,
        '"always", "never", "on-failure"',
        'not the string "sometimes"',
    )


# --- services ----------------------------------------------------------------------------


def test_unknown_handler_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[services]]\n  internal_port = 8080\n'
        '  [[services.ports]]\n    port = 443\n    handlers = ["https"]\n',
    )
    check(
        loaded,
        "services[0].ports[0].handlers[0]",
        ERROR,
        6,
        '"https" is not a handler',
        "http, tls, proxy_proto, pg_tls",
    )


@pytest.mark.parametrize("port", [0, 70000, 65536, -1])
def test_port_outside_1_to_65535_is_an_error(tmp_path: Path, port: int) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[services]]\n  internal_port = 8080\n'
        f'  [[services.ports]]\n    port = {port}\n    handlers = ["http"]\n',
    )
    check(loaded, "services[0].ports[0].port", ERROR, 5, f"is {port}", "ports are 1-65535")


def test_internal_port_outside_range_is_an_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[http_service]\n  internal_port = 70000\n')
    check(loaded, "http_service.internal_port", ERROR, 3, "ports are 1-65535")


def test_http_service_internal_port_left_out_defaults_to_8080(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[http_service]\n  force_https = true\n')
    check(loaded, "http_service", INFO, 2, "internal_port is not set; it defaults to 8080")


def test_a_wrongly_typed_internal_port_is_not_reported_as_unset(tmp_path: Path) -> None:
    # the file does set internal_port; telling the user it "is not set" contradicts the file
    loaded = load(tmp_path, 'app = "a"\n[http_service]\ninternal_port = "abc"\n')
    check(loaded, "http_service.internal_port", ERROR, 3, 'not the string "abc"')
    assert [d for d in loaded.diagnostics if "not set" in d.message] == []


def test_port_range_backwards_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[services]]\n  internal_port = 8080\n'
        "  [[services.ports]]\n"
        "    start_port = 9000\n"
        "    end_port = 8000\n"
        '    handlers = ["tls"]\n',
    )
    check(
        loaded,
        "services[0].ports[0].start_port",
        ERROR,
        5,
        "start_port 9000 is after end_port 8000",
    )


def test_port_range_in_order_is_fine(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[services]]\n  internal_port = 8080\n'
        "  [[services.ports]]\n"
        "    start_port = 8080\n"
        "    end_port = 8085\n"
        '    handlers = ["tls"]\n',
    )
    assert problems(loaded) == []


def test_unknown_concurrency_type_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[http_service]\n  internal_port = 8080\n'
        '  [http_service.concurrency]\n    type = "donuts"\n',
    )
    check(
        loaded,
        "http_service.concurrency.type",
        ERROR,
        5,
        '"connections", "requests"',
        'not the string "donuts"',
    )


def test_soft_limit_above_hard_limit_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[http_service]\n  internal_port = 8080\n'
        '  [http_service.concurrency]\n    type = "requests"\n'
        "    soft_limit = 30\n    hard_limit = 20\n",
    )
    check(
        loaded,
        "http_service.concurrency.soft_limit",
        ERROR,
        6,
        "soft_limit 30 is above hard_limit 20",
    )


def test_auto_stop_machines_as_the_string_false_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[http_service]\n  internal_port = 8080\n  auto_stop_machines = "false"\n',
    )
    check(
        loaded,
        "http_service.auto_stop_machines",
        ERROR,
        4,
        '"off", "stop", "suspend"',
        'not the string "false"',
    )


@pytest.mark.parametrize("value", ['"suspend"', '"stop"', '"off"', "true", "false"])
def test_auto_stop_machines_words_and_booleans_are_fine(tmp_path: Path, value: str) -> None:
    loaded = load(
        tmp_path,
        f'app = "a"\n[http_service]\n  internal_port = 8080\n  auto_stop_machines = {value}\n',
    )
    assert problems(loaded) == []


@pytest.mark.parametrize("stop", ['"stop"', '"suspend"', "true"])
def test_auto_stop_without_auto_start_is_a_warning(tmp_path: Path, stop: str) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[http_service]\n"  # 2
        "  internal_port = 8080\n"  # 3
        f"  auto_stop_machines = {stop}\n"  # 4
        "  auto_start_machines = false\n",  # 5
    )
    check(
        loaded,
        "http_service.auto_start_machines",
        WARNING,
        5,
        "never starts them",
        "both enabled or both disabled",
    )


def test_service_check_interval_under_one_second_is_a_warning(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        f'app = "a"\n{SERVICE}'  # 1-6
        "  [[services.tcp_checks]]\n"  # 7
        '    interval = "500ms"\n'  # 8
        '    timeout = "2s"\n',  # 9
    )
    check(
        loaded,
        "services[0].tcp_checks[0].interval",
        WARNING,
        8,
        "less than 1 second (500ms)",
        "raises it to 1 second",
    )
    assert loaded.valid


def test_service_check_timeout_over_a_minute_is_a_warning(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        f'app = "a"\n{SERVICE}  [[services.http_checks]]\n    timeout = "2m"\n    path = "/"\n',
    )
    check(
        loaded,
        "services[0].http_checks[0].timeout",
        WARNING,
        8,
        "greater than 1 minute (2m)",
        "lowers it to 1 minute",
    )


def test_service_without_ports_is_a_warning(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n\n[[services]]\n  internal_port = 8080\n')
    check(loaded, "services[0]", WARNING, 3, "must expose at least one port")


def test_force_https_without_the_http_handler_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[services]]\n  internal_port = 8080\n'  # 1-3
        "  [[services.ports]]\n"  # 4
        "    port = 443\n"  # 5
        '    handlers = ["tls"]\n'  # 6
        "    force_https = true\n",  # 7
    )
    check(
        loaded,
        "services[0].ports[0].force_https",
        ERROR,
        7,
        "needs the http handler on this port",
    )


def test_force_https_with_the_http_handler_is_fine(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[services]]\n  internal_port = 8080\n'
        '  [[services.ports]]\n    port = 80\n    handlers = ["http"]\n    force_https = true\n',
    )
    assert problems(loaded) == []


def test_udp_with_handlers_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[services]]\n"  # 2
        "  internal_port = 5000\n"  # 3
        '  protocol = "udp"\n'  # 4
        "  [[services.ports]]\n"  # 5
        "    port = 5000\n"  # 6
        '    handlers = ["tls"]\n',  # 7
    )
    check(
        loaded,
        "services[0].ports[0].handlers",
        ERROR,
        7,
        "leave handlers unset for UDP services",
    )


def test_udp_without_handlers_is_fine(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[services]]\n  internal_port = 5000\n  protocol = "udp"\n'
        "  [[services.ports]]\n    port = 5000\n",
    )
    assert problems(loaded) == []


# --- mounts ------------------------------------------------------------------------------


def test_mount_destination_root_is_an_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[[mounts]]\n  source = "d"\n  destination = "/"\n')
    check(
        loaded,
        "mounts[0].destination",
        ERROR,
        4,
        "mount 'd'",
        "destination cannot be / since that's where the root file system is mounted",
    )


@pytest.mark.parametrize("days", [0, 61, -1])
def test_snapshot_retention_outside_1_to_60_is_an_error(tmp_path: Path, days: int) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[mounts]]\n  source = "d"\n  destination = "/d"\n'
        f"  snapshot_retention = {days}\n",
    )
    check(
        loaded,
        "mounts[0].snapshot_retention",
        ERROR,
        5,
        "not between 1 and 60 days inclusive",
    )


@pytest.mark.parametrize("days", [1, 5, 60])
def test_snapshot_retention_1_to_60_is_fine(tmp_path: Path, days: int) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[mounts]]\n  source = "d"\n  destination = "/d"\n'
        f"  snapshot_retention = {days}\n",
    )
    assert problems(loaded) == []


@pytest.mark.parametrize(
    ("size", "phrase"),
    [
        ('"500mb"', "smaller than 1GB"),
        ('"15Mb"', "smaller than 1GB"),
        ("0", "smaller than 1GB"),
        ('"501gb"', "larger than 500GB"),
        ('"1tb"', "larger than 500GB"),
        ("1000", "larger than 500GB"),
    ],
)
def test_initial_size_outside_1gb_to_500gb_is_an_error(
    tmp_path: Path, size: str, phrase: str
) -> None:
    loaded = load(
        tmp_path,
        f'app = "a"\n[[mounts]]\n  source = "d"\n  destination = "/d"\n  initial_size = {size}\n',
    )
    check(loaded, "mounts[0].initial_size", ERROR, 5, phrase)


@pytest.mark.parametrize("size", ['"1gb"', '"1024mb"', "1", '"30GB"', '"500gb"'])
def test_initial_size_of_at_least_1gb_is_fine(tmp_path: Path, size: str) -> None:
    loaded = load(
        tmp_path,
        f'app = "a"\n[[mounts]]\n  source = "d"\n  destination = "/d"\n  initial_size = {size}\n',
    )
    assert problems(loaded) == []


# --- top-level checks --------------------------------------------------------------------


def test_top_level_check_without_type_is_an_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[checks.alive]\n  port = 8080\n')
    check(loaded, "checks.alive", ERROR, 2, "check 'alive' needs a type: tcp or http")


def test_top_level_check_without_port_or_http_service_is_an_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n[checks.alive]\n  type = "tcp"\n')
    check(
        loaded,
        "checks.alive",
        ERROR,
        2,
        "check 'alive' needs a port",
        "has no [http_service] to take it from",
    )


def test_top_level_check_without_port_uses_http_service(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[http_service]\n  internal_port = 8080\n'
        '[checks.web]\n  type = "http"\n  path = "/"\n',
    )
    assert problems(loaded) == []


def test_top_level_check_without_port_needs_an_http_service_in_its_own_group(
    tmp_path: Path,
) -> None:
    # flyctl takes the port from the http_service of the check's group, after flattening
    # (`internal/appconfig/processgroups.go`): the worker group has no http_service, so
    # there is no port.
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[processes]\n"  # 2
        '  app = "run"\n'  # 3
        '  worker = "work"\n'  # 4
        "[http_service]\n"  # 5
        "  internal_port = 8080\n"  # 6
        '  processes = ["app"]\n'  # 7
        "[checks.worker_alive]\n"  # 8
        '  type = "tcp"\n'  # 9
        '  processes = ["worker"]\n',  # 10
    )
    check(loaded, "checks.worker_alive", ERROR, 8, "'worker_alive'", "needs a port")


def test_top_level_check_interval_under_two_seconds_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[checks.alive]\n  type = "tcp"\n  port = 8080\n  interval = "1s"\n',
    )
    check(
        loaded,
        "checks.alive.interval",
        ERROR,
        5,
        "check 'alive' interval is too short: 1s, minimum is 2 seconds",
    )


def test_top_level_check_timeout_over_sixty_seconds_is_an_error(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[checks.alive]\n  type = "tcp"\n  port = 8080\n  timeout = "61s"\n',
    )
    check(
        loaded,
        "checks.alive.timeout",
        ERROR,
        5,
        "check 'alive' timeout is too long",
        "maximum is 60 seconds",
    )


def test_top_level_check_at_the_limits_is_fine(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[checks.alive]\n  type = "tcp"\n  port = 8080\n'
        '  interval = "2s"\n  timeout = "60s"\n',
    )
    assert problems(loaded) == []


# --- commands ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path_str", "line", "what"),
    [
        (
            '[deploy]\n  release_command = "bin/rails \'db:migrate"\n',
            "deploy.release_command",
            3,
            "release command",
        ),
        ('console_command = "bin/rails \'console"\n', "console_command", 2, "console command"),
        (
            '[processes]\n  app = "bin/rails \'server"\n',
            "processes.app",
            3,
            "command of the 'app' process group",
        ),
    ],
    ids=["release_command", "console_command", "processes"],
)
def test_commands_with_an_unterminated_quote_are_errors(
    tmp_path: Path, text: str, path_str: str, line: int, what: str
) -> None:
    loaded = load(tmp_path, f'app = "a"\n{text}')
    check(loaded, path_str, ERROR, line, f"can't shell split the {what}", "no closing quotation")


# --- unknown and misplaced keys ----------------------------------------------------------


def test_unknown_key_suggests_the_nearest_known_one(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[services]]\n"  # 2
        "  interal_port = 8080\n"  # 3
        "  [[services.ports]]\n"  # 4
        "    port = 80\n"  # 5
        '    handlers = ["http"]\n',  # 6
    )
    check(
        loaded,
        "services[0].interal_port",
        WARNING,
        3,
        "unknown key services[0].interal_port",
        "did you mean internal_port?",
    )
    assert loaded.valid


def test_unknown_top_level_key_suggests_too(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\nprimary_regoin = "ams"\n')
    check(loaded, "primary_regoin", WARNING, 2, "did you mean primary_region?")


def test_misplaced_key_says_where_it_belongs(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n'  # 1
        "[[services]]\n"  # 2
        "  internal_port = 8080\n"  # 3
        "  [[services.ports]]\n"  # 4
        "    port = 80\n"  # 5
        '    handlers = ["http"]\n'  # 6
        '    protocol = "tcp"\n',  # 7
    )
    check(
        loaded,
        "services[0].ports[0].protocol",
        WARNING,
        7,
        "protocol is a key of [[services]]",
        "not of [[services.ports]]",
    )


# --- process groups each run on their own machines ---------------------------------------


SIDECAR = """app = "my-go-app-with-nginx"

[[services]]
  processes = ["web", "nginx"]
  internal_port = 8080
  tcp_checks = [
    { interval = "30s", timeout = "10s" }
  ]

[[services.ports]]
  port = 80
  handlers = ["http"]

[deploy]
  strategy = "rolling"

[build]
  dockerfile = "Dockerfile"

[processes]
  web = "go run main.go"
  nginx = "nginx -g 'daemon off;'"
"""


def test_sidecar_assumption_warns_that_groups_run_on_their_own_machines(tmp_path: Path) -> None:
    loaded = load(tmp_path, SIDECAR)
    check(
        loaded,
        "services[0].processes",
        WARNING,
        4,
        "web and nginx",
        "each process group runs on its own machines",
        "cannot reach each other on localhost",
    )
    assert loaded.valid


def test_groups_with_the_same_command_on_one_service_do_not_warn(tmp_path: Path) -> None:
    text = SIDECAR.replace("nginx = \"nginx -g 'daemon off;'\"", 'nginx = "go run main.go"')
    (tmp_path / "Dockerfile").write_text("FROM golang:1.22\n")
    assert problems(load(tmp_path, text)) == []


def test_a_dockerfile_that_is_not_there_is_named(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'app = "a"\n\n[build]\n  dockerfile = "deploy/Dockerfile"\n')
    check(
        loaded,
        "build.dockerfile",
        WARNING,
        4,
        '"deploy/Dockerfile", which does not exist',
        "the docker driver can't build the app",
    )


@pytest.mark.parametrize(
    ("snippet", "path_str", "label"),
    [
        ('[[mounts]]\n  source = "d"\n  destination = "/d"\n', "mounts[0]", "mounts[0]"),
        ('[[metrics]]\n  port = 9091\n  path = "/metrics"\n', "metrics[0]", "metrics[0]"),
        ('[[restart]]\n  policy = "always"\n', "restart[0]", "restart[0]"),
        ('[checks.alive]\n  type = "tcp"\n  port = 8080\n', "checks.alive", "check 'alive'"),
    ],
    ids=["mounts", "metrics", "restart", "checks"],
)
def test_items_without_processes_apply_only_to_the_default_group(
    tmp_path: Path, snippet: str, path_str: str, label: str
) -> None:
    loaded = load(tmp_path, f'app = "a"\n[processes]\n  app = "run"\n  worker = "work"\n{snippet}')
    check(
        loaded,
        path_str,
        WARNING,
        5,
        f"{label} has no processes",
        "applies only to the default group 'app', not to every group",
    )
    assert problems(loaded) == [diag(loaded, path_str)]


def test_items_without_processes_in_a_single_group_app_are_fine(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[[mounts]]\n  source = "d"\n  destination = "/d"\n'
        '[[restart]]\n  policy = "always"\n',
    )
    assert problems(loaded) == []


def test_files_without_processes_do_not_warn_in_a_multi_group_app(tmp_path: Path) -> None:
    # flyctl merges [[files]] before it flattens per group (`processgroups.go`), so taxiway
    # gives files without processes to every group and has nothing to warn about.
    loaded = load(
        tmp_path,
        'app = "a"\n[processes]\n  app = "run"\n  worker = "work"\n'
        '[[files]]\n  guest_path = "/x"\n  raw_value = "x"\n',
    )
    assert problems(loaded) == []


def test_vm_without_processes_applies_to_every_group_without_a_warning(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'app = "a"\n[processes]\n  app = "run"\n  worker = "work"\n'
        '[[vm]]\n  size = "shared-cpu-2x"\n',
    )
    assert problems(loaded) == []


# --- a clean config ----------------------------------------------------------------------


CLEAN = """\
app = "shop-prod"
primary_region = "ams"
kill_signal = "SIGTERM"
kill_timeout = "30s"
console_command = "/app/bin/console --env production"
swap_size_mb = 512

[build]
  dockerfile = "Dockerfile"
  build-target = "runtime"
  [build.args]
    NODE_ENV = "production"

[deploy]
  release_command = "bin/migrate --yes"
  strategy = "rolling"
  max_unavailable = 0.33
  wait_timeout = "10m"

[env]
  LOG_LEVEL = "info"
  PORT = "8080"

[processes]
  app = "bin/server -p 8080"
  worker = "bin/worker --queue 'default jobs'"

[http_service]
  internal_port = 8080
  force_https = true
  auto_stop_machines = "stop"
  auto_start_machines = true
  min_machines_running = 1
  processes = ["app"]
  [http_service.concurrency]
    type = "requests"
    soft_limit = 200
    hard_limit = 250
  [[http_service.checks]]
    grace_period = "10s"
    interval = "30s"
    method = "GET"
    timeout = "5s"
    path = "/healthz"
    [http_service.checks.headers]
      X-Forwarded-Proto = "https"

[[services]]
  internal_port = 9000
  protocol = "tcp"
  processes = ["worker"]
  auto_stop_machines = "off"
  auto_start_machines = false
  [[services.ports]]
    port = 9000
    handlers = ["tls"]
    tls_options = { alpn = ["h2"], versions = ["TLSv1.2", "TLSv1.3"] }
  [[services.tcp_checks]]
    grace_period = "1s"
    interval = "15s"
    timeout = "2s"

[checks.worker_alive]
  type = "tcp"
  port = 9000
  interval = "15s"
  timeout = "2s"
  processes = ["worker"]

[[vm]]
  size = "shared-cpu-1x"
  memory = "1gb"

[[vm]]
  size = "performance-2x"
  processes = ["worker"]

[[mounts]]
  source = "shop_data"
  destination = "/data"
  initial_size = "10gb"
  snapshot_retention = 14
  processes = ["app"]

[[metrics]]
  port = 9091
  path = "/metrics"
  processes = ["app"]

[[statics]]
  guest_path = "/app/public"
  url_prefix = "/static/"

[[files]]
  guest_path = "/etc/app/motd"
  raw_value = "welcome"
  processes = ["app"]

[[restart]]
  policy = "on-failure"
  retries = 5
  processes = ["app", "worker"]
"""


def test_a_clean_realistic_config_has_no_warnings_or_errors(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.12-slim\nWORKDIR /app\n")
    loaded = load(tmp_path, CLEAN)
    assert problems(loaded) == []
    assert loaded.valid
    config = loaded.config
    assert config.processes == {
        "app": "bin/server -p 8080",
        "worker": "bin/worker --queue 'default jobs'",
    }
    assert config.http_service is not None
    assert config.http_service.checks is not None
    assert config.http_service.checks[0].headers == {"X-Forwarded-Proto": "https"}
    assert config.mounts is not None
    assert config.mounts[0].initial_size == "10gb"
