"""Load generation with oha (built from crates.io) on 127.0.0.1, in bounded runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LoadResult:
    requests: int
    ok: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]


def oha_binary() -> str:
    found = shutil.which("oha") or str(Path.home() / ".cargo/bin/oha")
    if not Path(found).exists():
        raise SystemExit("oha not found: run `cargo install oha --locked` (make bench does)")
    return found


def run(
    url: str,
    body: bytes | list[bytes],
    *,
    headers: dict[str, str],
    connections: int,
    duration: float | None = None,
    requests: int | None = None,
    rate: float | None = None,
) -> LoadResult:
    """One bounded oha run. ``body`` is one request body, or a list of text bodies of which oha
    sends a random one with each request (`oha -Z`: one body per line, so no line breaks)."""
    with tempfile.NamedTemporaryFile(suffix=".body") as handle:
        if isinstance(body, bytes):
            handle.write(body)
            body_option = "-D"
        else:
            if any(b"\n" in line or b"\r" in line for line in body):
                raise ValueError("bodies sent in rotation must be single lines")
            handle.write(b"\n".join(body) + b"\n")
            body_option = "-Z"
        handle.flush()
        args = [
            oha_binary(),
            "--no-tui",
            "--output-format",
            "json",
            "-m",
            "POST",
            body_option,
            handle.name,
            "-c",
            str(connections),
        ]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        if duration is not None:
            args += ["-z", f"{duration}s"]
        if requests is not None:
            args += ["-n", str(requests)]
        if rate is not None:
            args += ["-q", str(rate), "--latency-correction"]
        args.append(url)
        output = subprocess.run(args, capture_output=True, check=True, text=True).stdout
    report: dict[str, Any] = json.loads(output)
    summary = report["summary"]
    statuses = {str(k): int(v) for k, v in report.get("statusCodeDistribution", {}).items()}
    total = sum(statuses.values())
    percentiles = report["latencyPercentiles"]
    return LoadResult(
        requests=total,
        ok=statuses.get("200", 0),
        seconds=summary["total"],
        rps=summary["requestsPerSec"],
        p50_ms=(percentiles.get("p50") or 0) * 1000,
        p99_ms=(percentiles.get("p99") or 0) * 1000,
        statuses=statuses,
    )


def alternate(cycles: int, bursts: Sequence[Callable[[], float]]) -> list[list[float]]:
    """Each burst once per cycle, the order reversed every other cycle, so that a slow moment of a
    shared machine falls on all of them alike; the rates each burst returned, cycle by cycle."""
    rates: list[list[float]] = [[] for _ in bursts]
    order = list(enumerate(bursts))
    for cycle in range(cycles):
        for index, burst in order if cycle % 2 == 0 else order[::-1]:
            rates[index].append(burst())
    return rates
