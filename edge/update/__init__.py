"""``kiosk update``: signed bundles installed beside the running version, switched safely.

- ``bundle``: the bundle's format, how one is trusted, and the rules of a safe switch;
- ``unpack``: the private copy of a bundle an update works from; an archive is unpacked
  only as far as its signed manifest lists;
- ``updater``: an update and the switch between versions (``Updater``), with its
  replaceable parts (``Hooks``);
- ``layout``: the versions on disk, their links, the update lock, and putting right what a
  power cut left (``Layout``);
- ``durable``: a version's files fsynced and recorded (``release-files.json``), and the
  check that they are all still there;
- ``hooks``: the real parts: the offline installer, restarts, health probes and the
  read-only check that no rental is under way;
- ``errors``: ``UpdateError`` and the tree under it.

docs/installing.md describes bundles and updates.
"""
