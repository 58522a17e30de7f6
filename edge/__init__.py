"""The kiosk runtime: settings, vision, roster and matcher, the flow, the rider screen, the CLI."""


def __getattr__(name: str) -> str:
    """``edge.__version__``, read from the installed distribution when first asked for.

    Importing ``importlib.metadata`` costs tens of milliseconds that ``kiosk --help`` and
    every other import of ``edge`` need not pay.
    """
    if name != "__version__":
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("powerbank-kiosk")
    except PackageNotFoundError:  # running from a source tree that is not installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found
