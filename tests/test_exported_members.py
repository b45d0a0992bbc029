"""The public API is exactly `hogflare.__all__`: a name cannot appear or vanish unnoticed."""

import hogflare


def test_all_exports() -> None:
    public = {name for name in dir(hogflare) if not name.startswith("_")} - {
        "app",
        "capture",
        "cli",
        "commit",
        "config",
        "debug",
        "enrichment",
        "export_ahead",
        "fake_pipeline",
        "flags",
        "flags_api",
        "errors",
        "http",
        "iceberg",
        "lake",
        "logs",
        "metrics",
        "models",
        "pipelines",
        "query",
        "remote_config",
        "shipper",
        "store",
        "supervisor",
    }
    assert set(hogflare.__all__) == public | {"__version__"}
    assert hogflare.__version__
