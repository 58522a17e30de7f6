"""The kiosk, in rooms: ``flow`` (the rider flow, pure), ``runtime`` (``kiosk run``),
``cabinet`` (slots, ejects, rentals on disk), ``vision``, ``vault`` (the roster), ``ui``
(the rider page), ``ops``, ``provision``, ``update``, ``demo`` and ``cli``; the settings
(``settings``, ``config``), the error root (``errors``) and enrolment from photos (``enrol``).
"""


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
