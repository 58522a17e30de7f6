"""MQTT on the kiosk (state, telemetry, signed remote commands) and the cloud's sender.

- ``commands``: the signed command format and its pure verification;
- ``ledger``: command ids already run (at most once, across restarts) and the results owed
  until the broker acknowledged them;
- ``inbox``: authentic commands waiting for the command thread, unacknowledged; the junk tally;
- ``results``: the owed results handed to paho, settled once the broker acknowledged them;
- ``executor``: verify, claim, run the caller's handler, answer;
- ``telemetry``: topics, the state and telemetry messages, Home Assistant discovery;
- ``client``: ``KioskMqtt``, the non-blocking paho client of a kiosk;
- ``sender``: sign, publish and wait for a result (``kiosk-cloud command send``).

See docs/operations.md for the topics and the wire format.
"""
