"""What the cabinet holds and gave out, kept on the kiosk's disk.

- ``slots``: the slot inventory (one rule table), in ``slots.db``;
- ``ejects``: the eject journal, every eject's intent written before the board is asked;
- ``settle``: ejects carried out (``kiosk eject``, the remote ``eject``) and intents nobody
  follows any more settled from the slots' status;
- ``rentals``: the rental ledger, written with the events that report it.

``kiosk run`` (``edge.runtime``), the technician's ``kiosk eject`` and ``kiosk slots``, the
remote commands and the sync daemon all use them, so they stand beside the runtime rather
than inside it.
"""
