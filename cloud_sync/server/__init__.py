"""The thin cloud API (``kiosk-cloud serve``): signed, idempotent event ingest, the kiosk
registry, reconciliation of rentals across kiosks; SQLite or PostgreSQL behind it."""
