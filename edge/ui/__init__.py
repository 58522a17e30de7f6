"""The rider screen: a local page fed by the flow's state over server-sent events."""
