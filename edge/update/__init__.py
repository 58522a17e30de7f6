"""``kiosk update``: signed bundles installed beside the running version, switched safely.

- ``bundle``: the bundle's format, how one is trusted, and the rules of a safe switch;
- ``updater``: versions on disk and the switch between them (``Updater``), with its
  replaceable parts (``Hooks``);
- ``hooks``: the real parts: the offline installer, restarts, health probes and the
  read-only check that no rental is under way;
- ``errors``: ``UpdateError`` and the tree under it.

docs/installing.md describes bundles and updates.
"""
