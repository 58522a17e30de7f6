"""The encrypted roster: device keys, sealing, the store, and signed deltas from the cloud.

Nothing personal is ever on disk in clear: every rider row is sealed with AES-256-GCM
under a data key that reaches the kiosk wrapped for the kiosk's own X25519 key.
"""
