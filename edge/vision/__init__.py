"""The face pipeline: from a camera frame to "this is rider X" (or a reason why not).

Modules, one concern each (docs/face-pipeline.md has the whole story):

- ``analysis``: the single-frame decision (``identify``); detection, landmarks, encoding,
  the quality gate and the single-frame analysis are the face encoder's, in ``models``
  (shared with the cloud's enrolment).
- ``matcher``: the in-memory roster matrix, exact nearest people (``Gallery``).
- ``policy``: the 1:N decision (``CohortPolicy``, roster-size aware, and the older
  ``ThresholdMarginPolicy``) behind the ``Policy`` protocol; ``Decision``.
- ``claim``: the claim step: salted code hashes, 1:1 / 1:few verification, lockout.
- ``consensus``: k-of-n agreement across frames and the ``DecisionRecord``.
- ``liveness``: the blink check that refuses a still photo.
- ``live``: the live pipeline (tracking, votes, liveness, one record per rider).
- ``evaluation``: the accuracy harness behind ``kiosk faces eval``.
- ``openset``, ``calibrate``: the open-set protocol and the fitting of operating points.
- ``setup``: build the above from the settings.
"""
