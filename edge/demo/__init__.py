"""``kiosk demo``: the whole appliance on one machine, walked through a short scenario.

- ``scenario``: the scenario's steps (enrol, rent, return, a stranger) and ``run_demo``;
- ``appliance``: the appliance composed (cloud, board simulator, kiosk runtime, sync
  daemon, rider page) and its stand-ins (the scripted camera, the screen watcher);
- ``cloud``: the real cloud API on loopback, and the operator;
- ``inspection``: the settings and commands to look into a running demo with the CLI;
- ``samples``: the default sample set, from photos that ship with scikit-image.

The demo is the one part of the kiosk allowed to import the cloud server (a test reads the
imports).
"""
