"""``kiosk provision``: a new kiosk set up from the file ``scripts/flash`` writes.

- ``plan``: the pure part: the provisioning file and its checks, the journal, the plan
  and the files it leads to;
- ``apply``: the I/O part: the plan carried out one step at a time (keys, first-boot
  files, registration, settings, cleanup), each step journalled as soon as it is done;
- ``errors``: the file unusable, this kiosk's state not fitting it, a refused token.

docs/provisioning.md says what goes where.
"""
