"""The `taxiway` command line, run as users run it: a real process in a real folder.

Every case runs ``python -m taxiway`` in a subprocess with ``cwd`` set to a temporary
folder and colours off, then checks the exit code (0 ok, 1 a user error, 2 a usage
error) and what was printed. A failure prints either one ``taxiway: error: …`` sentence
or ``FILE:LINE: severity: message`` diagnostic lines (with a summary), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cli_runner import run_taxiway
from taxiway import __version__
from taxiway.config.loader import load_config
from validate_json import assert_validate_json

#: A config with comments and legacy forms that `show`/`save` rewrite: a bare-number
#: kill_timeout (seconds), a bare-number check interval (milliseconds; one warning),
#: a `[mounts]` table and a `[metrics]` table.
APP = """\
# taxiway test app
app = "cli-test"            # the app's name
primary_region = "fra"
kill_signal = "SIGTERM"
kill_timeout = 5            # seconds, legacy bare number

[build]
  image = "registry.example/app:1"

[env]
  LOG_LEVEL = "debug"

[processes]
  web = "bin/server --port 8080"
  worker = "bin/worker"

# public HTTP
[http_service]
  internal_port = 8080
  force_https = true
  auto_stop_machines = "stop"
  auto_start_machines = true
  min_machines_running = 1
  processes = ["web"]

  [[http_service.checks]]
    interval = 15000          # milliseconds, legacy bare number
    timeout = "2s"
    path = "/health"

[[services]]
  internal_port = 9000
  protocol = "tcp"
  processes = ["worker"]

  [[services.ports]]
    port = 9000

[[vm]]
  size = "shared-cpu-2x"
  memory = "1gb"
  processes = ["web"]

# persistent data for the worker
[mounts]
  source = "data"
  destination = "/data"
  processes = ["worker"]

[metrics]
  port = 9091
  path = "/metrics"
  processes = ["web"]
"""

#: The same app with nothing to warn about.
CLEAN_APP = APP.replace("interval = 15000 ", 'interval = "15s"')

APP_JSON = """\
{
  "app": "json-app",
  "primary_region": "ams",
  "env": {"GREETING": "hi"},
  "http_service": {
    "internal_port": 8080,
    "auto_stop_machines": "stop",
    "checks": [{"path": "/", "interval": "10s", "timeout": "2s"}]
  },
  "mounts": {"source": "data", "destination": "/data"}
}
"""

APP_YAML = """\
# a comment, as YAML allows
app: yaml-app
primary_region: ams
env:
  GREETING: hi
http_service:
  internal_port: 8080
  auto_stop_machines: stop
  checks:
    - path: /
      interval: 10s
      timeout: 2s
mounts:
  source: data
  destination: /data
"""

DIAGNOSTIC = re.compile(
    r"^(?!taxiway: )(?P<file>[^:\s]+)(?::(?P<line>\d+))?: (?P<severity>error|warning|info): .+"
)
SUMMARY = re.compile(r"^\S+ is not valid: .+")
ONE_SENTENCE = re.compile(r"^taxiway: error: \S.*")
ANSI = "\x1b["


def taxiway(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_taxiway(cwd, *args)


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the first line of ``text`` that contains ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} is not in the text")


def assert_no_crash(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "internal error" not in output, output


def assert_fails(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Exit 1; stderr only diagnostic lines, a summary, and at most one final sentence."""
    assert_no_crash(result)
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert lines, "a failure must say why"
    for line in lines:
        assert DIAGNOSTIC.match(line) or SUMMARY.match(line) or ONE_SENTENCE.match(line), line
    sentences = [line for line in lines if ONE_SENTENCE.match(line)]
    assert len(sentences) <= 1, lines
    if sentences:
        assert lines[-1] == sentences[0], "the sentence comes last, after the diagnostics"
    return lines


def assert_one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 1 with exactly one `taxiway: error: …` line on stderr; returns the sentence."""
    assert_no_crash(result)
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert ONE_SENTENCE.match(lines[0]), lines[0]
    return lines[0].removeprefix("taxiway: error: ")


def assert_usage(result: subprocess.CompletedProcess[str]) -> None:
    assert_no_crash(result)
    assert result.returncode == 2, result
    assert "usage: taxiway" in result.stderr
    assert result.stdout == ""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A folder holding APP as fly.toml."""
    (tmp_path / "fly.toml").write_text(APP, encoding="utf-8")
    return tmp_path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --- help, version, usage --------------------------------------------------------------


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = taxiway(tmp_path, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: taxiway")
    assert "config" in result.stdout
    assert result.stderr == ""
    config_help = taxiway(tmp_path, "config", "--help")
    assert config_help.returncode == 0
    for command in ("validate", "show", "save", "schema", "machines"):
        assert command in config_help.stdout
    validate_help = taxiway(tmp_path, "config", "validate", "--help")
    assert validate_help.returncode == 0
    for option in ("--config", "--json", "--strict"):
        assert option in validate_help.stdout


def test_version(tmp_path: Path) -> None:
    result = taxiway(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout == f"taxiway {__version__}\n"
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", __version__)


def test_the_installed_console_script_is_the_same_command(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "taxiway"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    result = subprocess.run(
        [str(script), "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"taxiway {__version__}\n"


@pytest.mark.parametrize("args", [(), ("config",)], ids=["taxiway", "taxiway-config"])
def test_a_command_without_its_subcommand_prints_usage(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = taxiway(tmp_path, *args)
    assert_usage(result)
    if args:
        assert "validate" in result.stderr and "machines" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--bogus",),
        ("config", "validate", "--bogus"),
        ("config", "validate", "-x"),
        ("nope",),
        ("config", "nope"),
        ("config", "show", "--format", "xml"),
        ("config", "save"),  # -o is required
        ("config", "machines", "--group"),  # needs a value
    ],
    ids=lambda args: " ".join(args),
)
def test_usage_errors_exit_2(app: Path, args: tuple[str, ...]) -> None:
    result = taxiway(app, *args)
    assert_usage(result)
    assert re.search(r"^taxiway[\w ]*: error: \S", result.stderr, re.MULTILINE), result.stderr


# --- validate ----------------------------------------------------------------------------


def test_validate_a_valid_file(tmp_path: Path) -> None:
    write(tmp_path, "fly.toml", CLEAN_APP)
    result = taxiway(tmp_path, "config", "validate")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "fly.toml is valid\n"
    assert result.stderr == ""


def test_validate_reports_each_error_at_its_line(app: Path) -> None:
    broken = APP.replace('kill_signal = "SIGTERM"', 'kill_signal = "SIGFOO"').replace(
        "port = 9000", "port = 70000"
    )
    write(app, "fly.toml", broken)
    result = taxiway(app, "config", "validate")
    lines = assert_fails(result)
    assert result.stdout == ""
    signal_line = line_of(broken, 'kill_signal = "SIGFOO"')
    assert any(
        line.startswith(f'fly.toml:{signal_line}: error: kill_signal "SIGFOO"') for line in lines
    ), lines
    port_line = line_of(broken, "    port = 70000")
    assert any(
        line.startswith(f"fly.toml:{port_line}: error: services[0].ports[0].port is 70000")
        for line in lines
    ), lines
    internal_line = line_of(broken, "internal_port = 70000")
    assert any(line.startswith(f"fly.toml:{internal_line}: error: ") for line in lines), lines
    # the warning is still printed, and the summary counts errors only
    assert any(DIAGNOSTIC.match(line) and ": warning: " in line for line in lines)
    assert lines[-1] == "fly.toml is not valid: 3 errors"


def test_warnings_pass_unless_strict(app: Path) -> None:
    result = taxiway(app, "config", "validate")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "fly.toml is valid (1 warning)\n"
    interval_line = line_of(APP, "interval = 15000")
    assert result.stderr.startswith(
        f"fly.toml:{interval_line}: warning: http_service.checks[0].interval"
    )

    strict = taxiway(app, "config", "validate", "--strict")
    lines = assert_fails(strict)
    assert lines[-1] == "fly.toml is not valid: 1 warning (--strict)"
    assert strict.stdout == ""

    write(app, "fly.toml", CLEAN_APP)
    assert taxiway(app, "config", "validate", "--strict").returncode == 0


def test_an_unknown_key_is_a_warning_that_strict_turns_into_a_failure(tmp_path: Path) -> None:
    text = 'app = "a"\nkill_timout = 5\n'
    write(tmp_path, "fly.toml", text)
    result = taxiway(tmp_path, "config", "validate")
    assert result.returncode == 0
    assert "fly.toml:2: warning: " in result.stderr
    assert "kill_timeout" in result.stderr  # the nearest known key
    assert_fails(taxiway(tmp_path, "config", "validate", "--strict"))


def test_the_default_file_is_fly_toml_in_the_current_folder(app: Path) -> None:
    write(app, "other.toml", "this is not toml")  # never read
    result = taxiway(app, "config", "validate", "--strict")
    # APP has one warning, so --strict fails: proof that fly.toml (not other.toml) was read
    lines = assert_fails(result)
    assert lines[-1] == "fly.toml is not valid: 1 warning (--strict)"
    assert taxiway(app, "config", "validate").returncode == 0


def test_c_names_another_file(tmp_path: Path) -> None:
    write(tmp_path, "staging.toml", CLEAN_APP)
    result = taxiway(tmp_path, "config", "validate", "-c", "staging.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "staging.toml is valid\n"
    long_form = taxiway(tmp_path, "config", "validate", "--config", "staging.toml")
    assert long_form.returncode == 0
    absolute = taxiway(tmp_path, "config", "validate", "-c", str(tmp_path / "staging.toml"))
    assert absolute.returncode == 0
    assert absolute.stdout == f"{tmp_path / 'staging.toml'} is valid\n"


def test_c_names_a_folder_that_holds_fly_toml(tmp_path: Path) -> None:
    folder = tmp_path / "myapp"
    folder.mkdir()
    write(folder, "fly.toml", CLEAN_APP)
    result = taxiway(tmp_path, "config", "validate", "-c", "myapp")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "myapp/fly.toml is valid\n"
    # its diagnostics name the file inside the folder
    write(folder, "fly.toml", CLEAN_APP.replace("port = 9000", "port = 0"))
    lines = assert_fails(taxiway(tmp_path, "config", "validate", "-c", "myapp"))
    assert any(line.startswith("myapp/fly.toml:") for line in lines), lines
    assert taxiway(tmp_path, "config", "machines", "-c", "myapp").returncode == 1


@pytest.mark.parametrize(
    ("name", "text"),
    [("fly.json", APP_JSON), ("fly.yaml", APP_YAML), ("fly.yml", APP_YAML)],
)
def test_json_and_yaml_configs(tmp_path: Path, name: str, text: str) -> None:
    write(tmp_path, name, text)
    result = taxiway(tmp_path, "config", "validate", "-c", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{name} is valid")
    machines = taxiway(tmp_path, "config", "machines", "-c", name, "--json")
    assert machines.returncode == 0, machines.stderr
    spec = json.loads(machines.stdout)["app"]
    assert spec["env"]["GREETING"] == "hi"
    assert spec["mounts"][0]["path"] == "/data"


@pytest.mark.parametrize(
    ("name", "text", "needle", "bad"),
    [
        ("fly.json", APP_JSON, '"internal_port": 8080', '"internal_port": 0'),
        ("fly.yaml", APP_YAML, "internal_port: 8080", "internal_port: 0"),
    ],
)
def test_json_and_yaml_diagnostics_have_lines(
    tmp_path: Path, name: str, text: str, needle: str, bad: str
) -> None:
    write(tmp_path, name, text.replace(needle, bad))
    lines = assert_fails(taxiway(tmp_path, "config", "validate", "-c", name))
    expected = line_of(text, needle)
    assert any(
        line.startswith(f"{name}:{expected}: error: http_service.internal_port") for line in lines
    ), lines


# --- validate --json ---------------------------------------------------------------------


def test_validate_json_for_a_valid_file(tmp_path: Path) -> None:
    write(tmp_path, "fly.toml", CLEAN_APP)
    result = taxiway(tmp_path, "config", "validate", "--json")
    assert result.returncode == 0
    assert result.stderr == ""
    out = assert_validate_json(result.stdout)
    assert out["valid"] is True
    assert not [d for d in out["diagnostics"] if d["severity"] != "info"]


def test_validate_json_with_errors_and_warnings(app: Path) -> None:
    broken = APP.replace('kill_signal = "SIGTERM"', 'kill_signal = "SIGFOO"')
    write(app, "fly.toml", broken)
    result = taxiway(app, "config", "validate", "--json")
    assert result.returncode == 1
    assert result.stderr == ""
    out = assert_validate_json(result.stdout)
    assert out["valid"] is False
    by_path = {d["path"]: d for d in out["diagnostics"]}
    assert by_path["kill_signal"]["severity"] == "error"
    assert by_path["kill_signal"]["line"] == line_of(broken, "kill_signal")
    assert by_path["http_service.checks[0].interval"]["severity"] == "warning"
    assert by_path["http_service.checks[0].interval"]["line"] == line_of(broken, "interval")


def test_validate_json_strict(app: Path) -> None:
    lenient = taxiway(app, "config", "validate", "--json")
    assert lenient.returncode == 0
    assert assert_validate_json(lenient.stdout)["valid"] is True
    strict = taxiway(app, "config", "validate", "--json", "--strict")
    assert strict.returncode == 1
    out = assert_validate_json(strict.stdout)
    assert out["valid"] is False
    assert [d["severity"] for d in out["diagnostics"]] == ["warning"]


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("fly.toml", 'app = "a"\n\n[env]\nA = "1"\nA = "2"\n', 5),
        ("fly.toml", 'app = "a"\n[http_service\ninternal_port = 8080\n', 2),
        ("fly.json", '{\n  "app": "a",\n  "env": {"A": "1",}\n}\n', 3),
        ("fly.yaml", "app: a\nenv:\n  A: [1, 2\n", 4),
        ("fly.toml", 'app = "a"\nx = "\x00"\n', 2),
    ],
    ids=["duplicate-key", "unclosed-header", "json-trailing-comma", "yaml-unclosed", "nul"],
)
def test_validate_json_for_a_file_that_does_not_parse(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    write(tmp_path, name, text)
    result = taxiway(tmp_path, "config", "validate", "-c", name, "--json")
    assert_no_crash(result)
    assert result.returncode == 1
    assert result.stderr == ""
    out = assert_validate_json(result.stdout)
    assert out["valid"] is False
    assert len(out["diagnostics"]) == 1
    (d,) = out["diagnostics"]
    assert d["severity"] == "error"
    assert d["line"] == line
    assert d["message"].startswith(f"{name}:{line}: ")
    # the same sentence the text mode prints
    text_mode = taxiway(tmp_path, "config", "validate", "-c", name)
    assert assert_one_sentence(text_mode) == d["message"]


def test_validate_json_without_a_config_file(tmp_path: Path) -> None:
    result = taxiway(tmp_path, "config", "validate", "--json")
    assert result.returncode == 1
    out = assert_validate_json(result.stdout)
    assert out["valid"] is False
    assert len(out["diagnostics"]) == 1
    assert out["diagnostics"][0]["severity"] == "error"
    assert "fly.toml" in out["diagnostics"][0]["message"]


# --- show ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_show_reads_back_to_the_same_config(app: Path, fmt: str) -> None:
    result = taxiway(app, "config", "show", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # warnings are validate's business; show prints only the config
    shown = write(app, f"shown.{fmt}", result.stdout)
    original = load_config(app / "fly.toml")
    again = load_config(shown)
    assert again.config == original.config
    assert again.valid


def test_show_defaults_to_toml_in_todays_form(app: Path) -> None:
    result = taxiway(app, "config", "show")
    assert result.returncode == 0, result.stderr
    data = tomllib.loads(result.stdout)
    assert data["kill_timeout"] == "5s"
    assert data["http_service"]["checks"][0]["interval"] == "15s"
    assert isinstance(data["mounts"], list) and data["mounts"][0]["source"] == "data"
    assert isinstance(data["metrics"], list) and data["metrics"][0]["port"] == 9091
    assert "#" not in result.stdout  # show is the normalised config, not the user's text


@pytest.mark.parametrize(("name", "text"), [("fly.json", APP_JSON), ("fly.yaml", APP_YAML)])
@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_show_from_json_and_yaml_reads_back(tmp_path: Path, name: str, text: str, fmt: str) -> None:
    write(tmp_path, name, text)
    result = taxiway(tmp_path, "config", "show", "-c", name, "--format", fmt)
    assert result.returncode == 0, result.stderr
    shown = write(tmp_path, f"shown.{fmt}", result.stdout)
    assert load_config(shown).config == load_config(tmp_path / name).config


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_show_reads_back_when_a_section_holds_only_unknown_keys(tmp_path: Path, fmt: str) -> None:
    # A misplaced key (app belongs at the top level) leaves [[services]] with nothing
    # known in it. As in flyctl, the entry is kept (a service with no ports); show's output
    # must keep it too, though an empty table would be dropped when read.
    write(tmp_path, "fly.toml", '# the app\n[[services]]\n  app = "misplaced"\n')
    original = load_config(tmp_path / "fly.toml")
    assert original.config.services is not None and len(original.config.services) == 1
    warned = taxiway(tmp_path, "config", "validate")
    assert "fly.toml:3: warning: unknown key services[0].app" in warned.stderr
    result = taxiway(tmp_path, "config", "show", "--format", fmt)
    assert result.returncode == 0, result.stderr
    shown = write(tmp_path, f"shown.{fmt}", result.stdout)
    assert load_config(shown).config == original.config
    plan = taxiway(tmp_path, "config", "machines", "--json")
    plan_again = taxiway(tmp_path, "config", "machines", "--json", "-c", shown.name)
    assert json.loads(plan_again.stdout) == json.loads(plan.stdout)
    saved = taxiway(tmp_path, "config", "save", "-o", f"saved.{fmt}")
    assert saved.returncode == 0, saved.stderr
    assert load_config(tmp_path / f"saved.{fmt}").config == original.config
    if fmt == "toml":  # saved from a TOML: the comment stays, the misplaced key goes
        text = (tmp_path / "saved.toml").read_text()
        assert "# the app" in text and "misplaced" not in text


def test_show_json_and_yaml_parse_as_such(app: Path) -> None:
    as_json = json.loads(taxiway(app, "config", "show", "--format", "json").stdout)
    as_yaml = yaml.safe_load(taxiway(app, "config", "show", "--format", "yaml").stdout)
    as_toml = tomllib.loads(taxiway(app, "config", "show", "--format", "toml").stdout)
    assert as_json == as_yaml == as_toml
    assert as_json["app"] == "cli-test"


# --- save ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("out.json", "json"), ("out.yaml", "yaml"), ("out.yml", "yaml"), ("out.toml", "toml")],
)
def test_save_picks_the_format_from_the_extension(app: Path, name: str, fmt: str) -> None:
    result = taxiway(app, "config", "save", "-o", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {name} ({fmt})\n"
    text = (app / name).read_text(encoding="utf-8")
    parsed = {"json": json.loads, "yaml": yaml.safe_load, "toml": tomllib.loads}[fmt](text)
    assert parsed["app"] == "cli-test"
    assert load_config(app / name).config == load_config(app / "fly.toml").config


@pytest.mark.parametrize(
    ("name", "fmt", "parse"),
    [
        ("config.txt", "yaml", yaml.safe_load),
        ("out.json", "toml", tomllib.loads),  # --format wins over the extension
        ("out.toml", "json", json.loads),
    ],
)
def test_save_with_an_explicit_format(app: Path, name: str, fmt: str, parse: Any) -> None:
    result = taxiway(app, "config", "save", "-o", name, "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {name} ({fmt})\n"
    data = parse((app / name).read_text(encoding="utf-8"))
    assert data["app"] == "cli-test"
    assert data["kill_timeout"] == "5s"


def test_save_without_an_extension_writes_toml(app: Path) -> None:
    result = taxiway(app, "config", "save", "-o", "flyconfig")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads((app / "flyconfig").read_text())["app"] == "cli-test"


def test_save_toml_from_toml_keeps_the_comments(app: Path) -> None:
    result = taxiway(app, "config", "save", "-o", "out.toml")
    assert result.returncode == 0, result.stderr
    text = (app / "out.toml").read_text(encoding="utf-8")
    # values were rewritten to today's form ...
    data = tomllib.loads(text)
    assert data["kill_timeout"] == "5s"
    assert data["http_service"]["checks"][0]["interval"] == "15s"
    assert isinstance(data["mounts"], list)
    assert isinstance(data["metrics"], list)
    assert "[[mounts]]" in text and "\n[mounts]" not in text
    # ... and every comment of the original is still there
    comments = [line.split("#", 1)[1] for line in APP.splitlines() if "#" in line]
    for comment in comments:
        assert comment in text, comment
    # a changed value keeps the comment on its line
    assert re.search(r'^kill_timeout = "5s"\s+# seconds, legacy bare number$', text, re.MULTILINE)
    assert re.search(
        r'^\s*interval = "15s"\s+# milliseconds, legacy bare number$', text, re.MULTILINE
    )
    # untouched lines are written as they were, indentation included
    assert 'app = "cli-test"            # the app\'s name' in text
    assert '  image = "registry.example/app:1"' in text
    assert load_config(app / "out.toml").config == load_config(app / "fly.toml").config
    # the saved file is today's form: nothing left to warn about
    assert taxiway(app, "config", "validate", "-c", "out.toml", "--strict").returncode == 0


def test_save_over_the_input_file_rewrites_it_in_place(app: Path) -> None:
    before = load_config(app / "fly.toml").config
    result = taxiway(app, "config", "save", "-o", "fly.toml")
    assert result.returncode == 0, result.stderr
    text = (app / "fly.toml").read_text(encoding="utf-8")
    assert "# persistent data for the worker" in text
    assert load_config(app / "fly.toml").config == before


def test_save_toml_from_json_has_no_comments_to_keep(tmp_path: Path) -> None:
    write(tmp_path, "fly.json", APP_JSON)
    result = taxiway(tmp_path, "config", "save", "-c", "fly.json", "-o", "fly.toml")
    assert result.returncode == 0, result.stderr
    assert load_config(tmp_path / "fly.toml").config == load_config(tmp_path / "fly.json").config


@pytest.mark.parametrize(
    "target",
    ["no/such/folder/out.toml", "a-folder", "fly.toml/out.json"],
    ids=["missing-folder", "is-a-folder", "under-a-file"],
)
def test_save_to_an_unwritable_path_is_one_sentence(app: Path, target: str) -> None:
    (app / "a-folder").mkdir()
    before = (app / "fly.toml").read_bytes()
    sentence = assert_one_sentence(taxiway(app, "config", "save", "-o", target))
    assert sentence.startswith(f"cannot write {target}: ")
    assert (app / "fly.toml").read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_save_into_a_read_only_folder(app: Path) -> None:
    locked = app / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        sentence = assert_one_sentence(taxiway(app, "config", "save", "-o", "locked/out.toml"))
    finally:
        locked.chmod(0o700)
    assert sentence == "cannot write locked/out.toml: Permission denied"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize(
    "args", [("config", "show"), ("config", "schema"), ("config", "validate", "--json")]
)
def test_a_full_stdout_is_a_user_error_not_a_bug(app: Path, args: tuple[str, ...]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "taxiway", *args],
            cwd=app,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr, result.stderr
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and ONE_SENTENCE.match(lines[0]), result.stderr


# --- schema --------------------------------------------------------------------------------


def test_schema_is_a_draft7_schema_that_valid_configs_match(tmp_path: Path) -> None:
    result = taxiway(tmp_path, "config", "schema")  # needs no fly.toml
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for data in (tomllib.loads(APP), json.loads(APP_JSON), yaml.safe_load(APP_YAML)):
        assert [e.message for e in validator.iter_errors(data)] == []
    # what show prints in today's form matches too
    write(tmp_path, "fly.toml", APP)
    shown = tomllib.loads(taxiway(tmp_path, "config", "show").stdout)
    assert [e.message for e in validator.iter_errors(shown)] == []


def test_schema_rejects_what_is_plainly_wrong(tmp_path: Path) -> None:
    schema = json.loads(taxiway(tmp_path, "config", "schema").stdout)
    validator = jsonschema.Draft7Validator(schema)
    data = tomllib.loads(APP)
    data["http_service"]["auto_stop_machines"] = "sometimes"
    assert list(validator.iter_errors(data))
    data = tomllib.loads(APP)
    data["kill_signal"] = "SIGFOO"
    assert list(validator.iter_errors(data))
    data = tomllib.loads(APP)
    data["processes"] = 5
    assert list(validator.iter_errors(data))


# --- machines ------------------------------------------------------------------------------


def test_machines_text(app: Path) -> None:
    result = taxiway(app, "config", "machines")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[web]" in out and "[worker]" in out
    assert out.index("[web]") < out.index("[worker]")
    web, worker = out.split("[worker]")
    assert "bin/server --port 8080" in web
    assert "tcp 80/http (force https), 443/http+tls -> :8080" in web
    assert "shared-cpu-2x" in web and "1024 MB" in web
    assert "FLY_PROCESS_GROUP=web" in web and "PRIMARY_REGION=fra" in web
    assert "bin/worker" in worker
    assert "/data" in worker
    assert "SIGTERM" in worker


def test_machines_json(app: Path) -> None:
    result = taxiway(app, "config", "machines", "--json")
    assert result.returncode == 0, result.stderr
    specs = json.loads(result.stdout)
    assert list(specs) == ["web", "worker"]
    web, worker = specs["web"], specs["worker"]
    for group, spec in specs.items():
        assert spec["group"] == group
        assert spec["env"]["FLY_PROCESS_GROUP"] == group
        assert spec["env"]["PRIMARY_REGION"] == "fra"
        assert spec["env"]["LOG_LEVEL"] == "debug"
        assert spec["stop_config"] == {"signal": "SIGTERM", "timeout": "5s"}
        for key in ("init", "services", "checks", "mounts", "files", "restart", "guest"):
            assert key in spec, key
    assert web["init"]["cmd"] == ["bin/server", "--port", "8080"]
    assert worker["init"]["cmd"] == ["bin/worker"]
    assert web["guest"]["cpus"] == 2
    assert web["guest"]["memory_mb"] == 1024
    assert web["guest"]["cpu_kind"] == "shared"
    assert worker["guest"]["cpus"] == 1
    assert worker["guest"]["memory_mb"] == 256
    (service,) = web["services"]
    assert service["internal_port"] == 8080
    assert [p["port"] for p in service["ports"]] == [80, 443]
    assert service["autostop"] == "stop"
    assert service["min_machines_running"] == 1
    assert service["checks"][0]["interval"] == "15s"
    assert service["checks"][0]["path"] == "/health"
    assert web["metrics"]["port"] == 9091
    assert web["mounts"] == []
    (worker_service,) = worker["services"]
    assert worker_service["internal_port"] == 9000
    assert worker["mounts"][0]["name"] == "data"
    assert worker["mounts"][0]["path"] == "/data"
    assert worker["metrics"] is None


def test_machines_of_an_app_without_processes_is_the_app_group(tmp_path: Path) -> None:
    write(tmp_path, "fly.toml", 'app = "single"\n[http_service]\ninternal_port = 3000\n')
    specs = json.loads(taxiway(tmp_path, "config", "machines", "--json").stdout)
    assert list(specs) == ["app"]
    assert specs["app"]["env"]["FLY_PROCESS_GROUP"] == "app"
    assert specs["app"]["services"][0]["internal_port"] == 3000


def test_machines_for_one_group(app: Path) -> None:
    text = taxiway(app, "config", "machines", "--group", "web")
    assert text.returncode == 0, text.stderr
    assert "[web]" in text.stdout and "[worker]" not in text.stdout
    as_json = taxiway(app, "config", "machines", "--group", "worker", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert list(json.loads(as_json.stdout)) == ["worker"]


def test_machines_for_a_group_that_does_not_exist(app: Path) -> None:
    for extra in ((), ("--json",)):
        result = taxiway(app, "config", "machines", "--group", "nope", *extra)
        sentence = assert_one_sentence(result)
        assert "'nope'" in sentence
        assert "web, worker" in sentence  # the groups there are
        assert result.stdout == ""


# --- commands that need a valid config -----------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("show",), ("show", "--format", "json"), ("save", "-o", "out.toml"), ("machines",)],
    ids=lambda c: " ".join(c),
)
def test_commands_that_need_a_valid_config_list_its_errors(
    app: Path, command: tuple[str, ...]
) -> None:
    broken = (
        APP.replace('kill_signal = "SIGTERM"', 'kill_signal = "SIGFOO"')
        .replace("kill_timeout = 5 ", "kill_timeout = 400 ")
        .replace('LOG_LEVEL = "debug"', 'FLY_REGION = "xyz"')  # a warning: not listed
    )
    write(app, "fly.toml", broken)
    result = taxiway(app, "config", *command)
    lines = assert_fails(result)
    assert result.stdout == ""
    errors = [line for line in lines if DIAGNOSTIC.match(line)]
    assert len(errors) == 2, lines
    assert all(": error: " in line for line in errors), "only errors, not warnings"
    assert f"fly.toml:{line_of(broken, 'kill_signal')}: error: kill_signal" in lines[0] + lines[1]
    assert any(f"fly.toml:{line_of(broken, 'kill_timeout')}: error: " in e for e in errors)
    assert ONE_SENTENCE.match(lines[-1])
    assert "fly.toml is not valid" in lines[-1]
    assert lines[-1].endswith("(`taxiway config validate` lists all)")
    assert not (app / "out.toml").exists()


@pytest.mark.parametrize(
    "command", [("show",), ("save", "-o", "out.toml"), ("machines",), ("machines", "--json")]
)
def test_commands_on_a_file_that_does_not_parse(tmp_path: Path, command: tuple[str, ...]) -> None:
    write(tmp_path, "fly.toml", 'app = "a"\napp = "b"\n')
    sentence = assert_one_sentence(taxiway(tmp_path, "config", *command))
    assert sentence == "fly.toml:2: not valid TOML: the same key is defined twice"
    assert not (tmp_path / "out.toml").exists()


# --- colour --------------------------------------------------------------------------------


def test_no_color_wins_over_force_color(app: Path) -> None:
    broken = APP.replace('kill_signal = "SIGTERM"', 'kill_signal = "SIGFOO"')
    write(app, "fly.toml", broken)
    env = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "FORCE_COLOR"}}
    args = [sys.executable, "-m", "taxiway", "config", "validate"]

    def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=app,
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, **extra},
            check=False,
        )

    assert ANSI in run({"FORCE_COLOR": "1"}).stderr
    plain = run({"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert ANSI not in plain.stderr
    assert plain.returncode == 1
    assert ANSI not in run({}).stderr  # a pipe is not a terminal


def test_the_console_script_flushes_everything_before_its_quick_exit(tmp_path: Path) -> None:
    """`run` leaves with os._exit (no interpreter teardown): piped output must still arrive
    whole, and exit codes must be kept."""
    script = Path(sys.executable).parent / "taxiway"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    # buffered, as for most users (an unbuffered stdout would hide a missing flush)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"NO_COLOR": "1"}
    schema = subprocess.run(
        [str(script), "config", "schema"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert schema.returncode == 0, schema.stderr
    assert len(schema.stdout) > 8192  # more than one buffer of sys.stdout
    assert json.loads(schema.stdout)["title"]
    (tmp_path / "fly.toml").write_text('app = "x"\n[http_service]\ninternal_port = "eighty"\n')
    bad = subprocess.run(
        [str(script), "config", "validate"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert bad.returncode == 1
    assert "http_service.internal_port must be a whole number" in bad.stdout + bad.stderr


@pytest.mark.parametrize("command", ["up", "status", "machine", "releases", "config"])
def test_each_command_parses_alone_as_within_the_whole_tree(command: str) -> None:
    """`main` builds only the invoked command's parser; its help is the full tree's."""
    from taxiway.cli.main import build_parser

    def help_of(parser: argparse.ArgumentParser) -> str:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices[command].format_help()

    assert help_of(build_parser(command)) == help_of(build_parser())


def test_commands_run_with_the_garbage_collector_on(tmp_path: Path) -> None:
    """`run` turns the cyclic collector off while the command's modules import, and on
    again before the command runs (`up` and `logs -f` may run for hours). The command is
    swapped for a probe that says which it found (`run` ends the process itself)."""
    probe = textwrap.dedent(
        """
        import gc, sys
        import taxiway.cli.config_cmd as config_cmd
        from taxiway.cli.main import run

        config_cmd.schema = lambda args: print("on" if gc.isenabled() else "off")
        sys.argv = ["taxiway", "config", "schema"]
        run()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "on\n"


def test_volume_sizes_stop_at_the_platforms_500_gb(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "sizes"\n')
    created = run_taxiway(tmp_path, "volumes", "create", "data", "--size", "10")
    assert created.returncode == 0, created.stderr
    volume = json.loads(run_taxiway(tmp_path, "volumes", "list", "--json").stdout)[0]
    for size in ("1e30", "501", "inf"):
        refused = run_taxiway(tmp_path, "volumes", "extend", volume["id"], "--size", size)
        assert refused.returncode == 1, refused
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    too_big = run_taxiway(tmp_path, "volumes", "extend", volume["id"], "--size", "1e30")
    assert "can't be 1e+30 GB: the platform's largest volume is 500 GB" in too_big.stderr
    big = run_taxiway(tmp_path, "volumes", "create", "big", "--size", "600")
    assert big.returncode == 1 and "largest volume is 500 GB" in big.stderr
    assert run_taxiway(tmp_path, "volumes", "extend", volume["id"], "--size", "500").returncode == 0
    listed = json.loads(run_taxiway(tmp_path, "volumes", "list", "--json").stdout)
    assert [v["size_gb"] for v in listed] == [500.0]
