"""The Prometheus text format (0.0.4), written from prometheus_client's metric families.

Why not ``prometheus_client.generate_latest``: it follows OpenMetrics naming and declares
every counter as ``NAME_total``, while the platform's counters are named without the
suffix (``fly_edge_http_responses_count``, ``fly_edge_data_out``); a dashboard built
for the platform's names must find exactly those. This writer keeps each family's name
as it is, and declares a re-exported app counter under the name its samples carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(families: Iterable[Any]) -> bytes:
    """The text format of ``families`` (`prometheus_client.core.Metric` objects)."""
    from prometheus_client.utils import floatToGoString

    out: list[str] = []
    for family in families:
        name = family.name
        samples = family.samples
        if family.type == "counter" and samples and all(s.name == name + "_total" for s in samples):
            name += "_total"
        kind = family.type if family.type in _TEXT_TYPES else "untyped"
        out.append(f"# HELP {name} {_escape_help(family.documentation)}\n")
        out.append(f"# TYPE {name} {kind}\n")
        for s in samples:
            if s.labels:
                labels = ",".join(f'{k}="{_escape_value(str(v))}"' for k, v in s.labels.items())
                out.append(f"{s.name}{{{labels}}} {floatToGoString(s.value)}\n")
            else:
                out.append(f"{s.name} {floatToGoString(s.value)}\n")
    return "".join(out).encode()


#: The types the text format knows; OpenMetrics' others (info, stateset, gaugehistogram)
#: are written as untyped.
_TEXT_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
