"""The ``kiosk`` command line: the kiosk's services and the technician's tools."""
