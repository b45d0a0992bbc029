"""The public API is exactly `hogflare.__all__`: a name cannot appear or vanish unnoticed."""

import types

import hogflare


def test_all_exports() -> None:
    # Submodules become attributes of the package once anything imports them; they are not
    # names the package exports.
    public = {
        name
        for name, value in vars(hogflare).items()
        if not name.startswith("_")
        and not (isinstance(value, types.ModuleType) and value.__name__ == f"hogflare.{name}")
    }
    assert set(hogflare.__all__) == public | {"__version__"}
    assert hogflare.__version__
