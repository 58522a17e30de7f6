"""Field operations on the kiosk: what the runtime reports, maintenance, status, doctor,
metrics and the MQTT wiring.

- ``runtime_status``: ``<state_dir>/runtime.json``, written by ``kiosk run``, read by
  ``kiosk status`` and ``kiosk doctor``;
- ``maintenance``: the out-of-service flag file and its event;
- ``status`` and ``doctor``: what ``kiosk status`` and ``kiosk doctor`` gather;
- ``event_log``: reading the outbox for ``kiosk events tail | export``;
- ``metrics``: Prometheus metrics and ``/healthz`` for the local web server;
- ``remote``: the kiosk's MQTT link built from the settings.
"""
