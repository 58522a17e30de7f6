"""``kiosk run``, the kiosk service: its parts composed around the rider flow.

- ``assemble``: the parts built from the settings (camera, face pipeline, roster, slot
  board, inventory, ledger, outbox, rider page) and the out-of-service check;
- ``loop``: the flow's thread, one input at a time, and the effects carried out;
- ``feeds``: the camera and board threads that post to the flow;
- ``board_worker``: every command to the slot board, one at a time;
- ``claim_step``: the typed code checked off the flow's thread;
- ``bookkeeping``: the flow's rentals and events into the ledger and the outbox;
- ``service``: why the kiosk may not rent right now (pure);
- ``serving``: an ASGI app served from a thread (the rider page; the demo's cloud);
- ``systemd``: sd_notify (ready, watchdog, stopping).

The records the runtime shares with the technician's commands (slots, ejects, rentals) are
in ``edge.cabinet``. docs/runtime.md tells the whole story.
"""
