"""The live pipeline: frames in, one decision per rider out, as fast as the CPU allows.

Per frame:

1. **Find the face.** With no face tracked, HOG runs on the frame scaled to
   ``detect_width`` and keeps every candidate, weak ones too; each candidate is judged by
   the offline detector (``kiosk faces identify``'s scale, upsampling and minimum score) on
   its region (``FaceEngine.search``), so the kiosk notices the faces the offline tools
   find. Every ``small_face_every``-th search looks at the full frame upsampled, for a
   small, far face (to say "come closer"). While
   a face is tracked, only the region around its last box is searched, at a scale where
   the face is about 100 px wide; every ``full_scan_every`` frames the whole frame is
   searched again, so a second person stepping in is noticed.
2. **One person at a time.** Another face of comparable size: no vote, a hint.
3. **Liveness** (when on): the tracked face's eyes and head pose (``models.mesh``) feed
   the blink check, and the challenge once one is asked (``edge.vision.challenge``).
4. **Vote.** Until the track has a verdict, the face goes through the quality gate and,
   if it passes, is encoded; the mean of the track's last ``fuse_frames`` encodings
   (``consensus.fuse``) is decided by the policy (``analysis.analyse`` and
   ``Policy.decide``, the same code as ``kiosk faces identify``); the vote goes to the
   k-of-n ``Consensus``. After a refusal, the face is re-tried every
   ``retry_refused_s``.
5. **Decide.** An accepted verdict becomes a ``DecisionRecord`` once liveness has passed
   (or at once when liveness is off); a liveness timeout or a refusal verdict becomes a
   refusal record. A verdict with a higher risk (a face the claim step will be offered to,
   a match of a rider flagged as a lookalike) waits for the rider to answer a random
   challenge instead (``LivenessConfig.challenge``; without one, for the blink). One
   record per verdict per track. A ``claim required`` refusal also
   hands over a ``ClaimNeeded`` (``FrameOutcome.claim``): the track's last encodings, for
   the claim step's 1:1 check (on their fused mean). While the rider types the code, the
   face is encoded again every ``claim_frame_s`` until ``claim_frames`` encodings are
   gathered, so the check fuses more frames than the vote did. They stay in memory and
   are never logged or stored.
6. **Hold.** A decided track keeps its identity (``FrameOutcome.person_id``) while the
   face stays in view; it is re-verified every ``reverify_s`` with a fresh encoding, and a
   face that no longer matches, jumps, or is lost for ``track_lost_s`` starts a new track.

The encoder (about 80 ms a face on the development machine) runs only for votes and
re-verification; everything else costs a few milliseconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from edge.vision.challenge import LivenessCheck
from edge.vision.consensus import ClaimWindow, Consensus, DecisionRecord, Verdict, Vote, fuse
from edge.vision.live_parts import (
    LIVENESS_FAILED,
    ClaimNeeded,
    FrameOutcome,
    LiveConfig,
    LiveEngine,
    nearest_in_roster,
    small_face_pass,
)
from edge.vision.liveness import LivenessConfig, LivenessState
from edge.vision.matcher import Gallery, Vector
from edge.vision.policy import CLAIM_REQUIRED, EMPTY_ROSTER, MATCH, UNKNOWN, Decision, Policy
from hardware.cameras import Frame
from models.analysis import NO_FACE_HINT, SEVERAL_FACES_HINT, analyse
from models.encoder import FaceBox, pick_face, rival_faces
from models.hints import Hint
from models.images import Image
from models.quality import QualityConfig
from models.reasons import NO_FACE, SEVERAL_FACES


def _thumbnail(image: Image) -> npt.NDArray[np.float32]:
    small = cv2.resize(image, (64, 48), interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.float32)


@dataclass
class _Track:
    box: FaceBox
    started_at: float
    last_seen: float
    consensus: Consensus
    liveness: LivenessCheck | None
    frames_seen: int = 0
    since_scan: int = 0
    missing: int = 0
    last_vote_at: float | None = None
    check_hold: bool = False
    verdict: Verdict | None = None
    risky: bool = False  # the verdict asks for the challenge (``_risky``)
    decided: DecisionRecord | None = None
    refused: DecisionRecord | None = None
    records: list[DecisionRecord] = field(default_factory=list)
    number: int = 0
    encodings: deque[Vector] = field(default_factory=deque, repr=False)  # the fusion window
    claim_window: ClaimWindow | None = field(default=None, repr=False)  # for the claim step


class LivePipeline:
    """Turns a stream of frames into decisions about the rider in front of the camera."""

    def __init__(
        self,
        engine: LiveEngine,
        gallery: Gallery,
        policy: Policy,
        quality: QualityConfig | None = None,
        config: LiveConfig | None = None,
        liveness: LivenessConfig | None = None,
    ) -> None:
        self.engine = engine
        self.gallery = gallery
        self.roster: Gallery | None = None
        self.policy = policy
        self.quality = quality or QualityConfig()
        self.config = config or LiveConfig()
        self.liveness_config = liveness
        self._track: _Track | None = None
        self._idle = 0
        self._idle_thumb: npt.NDArray[np.float32] | None = None
        self._searches = 0  # searches of an untracked scene (every few is a small-face pass)
        self._last_frame_at: float | None = None
        self.encodings = 0
        self._tracks = 0

    def reset(self) -> None:
        self._track = None

    def swap_gallery(self, gallery: Gallery, roster: Gallery | None = None) -> None:
        """Use a new roster from the next frame on (a roster update). With ``roster`` (every
        rider), ``gallery`` is the kiosk's automatic set: a face it does not know may still
        be a rider, so it is offered the claim step instead of being refused, and a match in
        the set stands only when ``roster`` holds nobody nearer (``nearest_in_roster``)."""
        self.gallery = gallery
        self.roster = roster
        self._track = None

    @property
    def claim_unknown(self) -> bool:
        """The gallery is an automatic set: a face it does not know may be a rider."""
        return self.roster is not None

    # -- finding the face --------------------------------------------------------------

    def _find(self, image: Image, track: _Track | None) -> list[FaceBox]:
        if track is not None:
            if track.since_scan < self.config.full_scan_every:
                near = self.engine.detect_near(image, track.box)
                if near:
                    track.since_scan += 1
                    track.missing = 0
                    return near
                track.missing += 1
                if track.missing % 3 != 1:  # gone from its place: look wider now and then
                    return []
            scanned = track.since_scan >= self.config.full_scan_every
            track.since_scan = 0
            found = self.engine.search(image, self.config.detect_width)
            if not found and scanned:  # a small face the wide scan cannot see: still there?
                found = self.engine.detect_near(image, track.box)
            return found
        # Nobody tracked. An empty scene that has not changed since the last empty frame
        # is not searched again (but at least every ``idle_detect_every`` frames). Faces
        # at arm's length are found at ``detect_width``; the upsampled pass for a small,
        # far face (to say "come closer") runs on every ``small_face_every``-th search,
        # the second one first (a rider standing still far away hears it within a second).
        thumb = _thumbnail(image)
        changed = self._idle_thumb is None or (
            float(np.abs(thumb - self._idle_thumb).mean()) >= self.config.idle_change
        )
        self._idle_thumb = thumb
        self._idle += 1
        if not changed and self._idle % self.config.idle_detect_every:
            return []
        self._searches += 1
        if self._searches % self.config.small_face_every != 2 % self.config.small_face_every:
            return self.engine.search(image, self.config.detect_width)
        return small_face_pass(self.engine, image)

    def _new_track(self, box: FaceBox, now: float) -> _Track:
        liveness = LivenessCheck(self.liveness_config) if self.liveness_config else None
        self._tracks += 1
        consensus = Consensus(self.config.consensus_k, self.config.consensus_n)
        window: deque[Vector] = deque(maxlen=max(1, self.config.fuse_frames))
        return _Track(box, now, now, consensus, liveness, number=self._tracks, encodings=window)

    # -- one frame ---------------------------------------------------------------------

    def process(self, frame: Frame) -> FrameOutcome:
        now, image = frame.timestamp, frame.image
        track = self._track
        # lost: unseen for track_lost_s over frames that missed it (a slow frame just after
        # one that saw the face is the CPU's delay, not the rider leaving)
        previous, self._last_frame_at = self._last_frame_at, now
        if (
            track is not None
            and now - track.last_seen > self.config.track_lost_s
            and track.last_seen != previous
        ):
            track = self._track = None
        boxes = self._find(image, track)
        if not boxes:
            if track is not None:
                track.check_hold = True  # whoever shows up next is checked before the label
                if track.liveness is not None:
                    self._unseen(image, now, track, track.liveness)
            return FrameOutcome(frame.index, now, 0, None, NO_FACE_HINT if track is None else None)
        height, width = image.shape[:2]
        chosen = pick_face(boxes, width, height)
        self._idle_thumb = None
        if track is None or chosen.iou(track.box) < self.config.min_track_iou:
            track = self._track = self._new_track(chosen, now)
        track.box, track.last_seen = chosen, now
        track.frames_seen += 1
        if rival_faces(boxes, chosen, self.config.rival_ratio):
            return FrameOutcome(frame.index, now, len(boxes), None, SEVERAL_FACES_HINT)

        live_state = None
        if track.liveness is not None and track.decided is None:
            live_state = track.liveness.update(now, self.engine.liveness_sample(image, chosen))

        if track.decided is not None:
            return self._hold(frame, track, chosen, len(boxes))
        return self._vote(frame, track, chosen, len(boxes), live_state)

    def _unseen(self, image: Image, now: float, track: _Track, liveness: LivenessCheck) -> None:
        """A frame where the detector lost the tracked face. During a challenge, a head
        turned past what the frontal detector finds is looked for by the face mesh at its
        last place; while the mesh sees it there, the track is kept."""
        sample = self.engine.liveness_sample(image, track.box) if liveness.challenged else None
        liveness.update(now, sample)
        if sample is not None:
            track.last_seen = now

    def _decide_face(
        self, image: Image, box: FaceBox, track: _Track | None = None
    ) -> tuple[Decision | None, Hint | None]:
        analysis = analyse(self.engine, image, self.quality, boxes=[box])
        if analysis.encoding is None:
            return None, analysis.hint
        self.encodings += 1
        probe = analysis.encoding
        if track is not None:
            track.encodings.append(analysis.encoding)
            probe = fuse(track.encodings)
            if track.claim_window is not None:
                track.claim_window.add(analysis.encoding)
        decision = self.policy.decide(self.gallery.search(probe))
        if self.roster is not None and decision.reason == MATCH:
            decision = nearest_in_roster(decision, self.roster, probe)
        return decision, None

    def _vote(
        self,
        frame: Frame,
        track: _Track,
        box: FaceBox,
        faces: int,
        live_state: LivenessState | None,
    ) -> FrameOutcome:
        now = frame.timestamp
        vote: Decision | None = None
        hint: Hint | None = None
        gave_up = live_state is not None and live_state.status == "failed" and track.refused
        if track.last_vote_at is None:
            due = True
        elif track.refused is not None:
            gathering = track.claim_window is not None and not track.claim_window.full
            every = self.config.claim_frame_s if gathering else self.config.retry_refused_s
            due = not gave_up and now - track.last_vote_at >= every
        else:
            due = track.verdict is None
        if due:
            vote, hint = self._decide_face(frame.image, box, track)
            if vote is not None:
                track.last_vote_at = now
                verdict = track.consensus.add(Vote.of(vote))
                if verdict is not None:
                    track.verdict = verdict
                    track.risky = self._risky(verdict, track)
        record = None
        claim = None
        verdict = track.verdict
        claimable = verdict is not None and self._claimable(verdict)
        if verdict is not None and track.risky and track.liveness is not None:
            live_state = track.liveness.escalate(now)
        if verdict is not None and verdict.reason == MATCH:
            if live_state is not None and live_state.status == "failed":
                record = self._record(track, now, verdict, LIVENESS_FAILED, "failed", accept=False)
                track.refused, track.verdict = record, None
                track.consensus.reset()
                hint = live_state.hint
            elif live_state is None or live_state.status == "passed":
                record = self._record(track, now, verdict, MATCH, "passed" if live_state else "off")
                track.decided = record
            else:
                hint = live_state.hint
        elif (
            verdict is not None
            and claimable
            and track.refused is None
            and live_state is not None
            and live_state.status != "passed"
        ):
            # a face offered the claim step must be live too: wait for the challenge (or
            # the blink) first
            if live_state.status == "failed":
                record = self._record(track, now, verdict, LIVENESS_FAILED, "failed", accept=False)
                track.refused, track.verdict = record, None
            hint = live_state.hint
        elif verdict is not None and track.refused is None:
            status = live_state.status if live_state is not None else "off"
            record = self._record(track, now, verdict, verdict.reason, status, accept=False)
            track.refused = record
            track.verdict = None
            if claimable and track.encodings:
                gathered = ClaimWindow(max(1, self.config.claim_frames), track.encodings)
                track.claim_window = gathered
                claim = ClaimNeeded(track.number, gathered, self.gallery.people)
        if hint is None and live_state is not None and live_state.status != "passed":
            hint = live_state.hint
        person = track.decided.person_id if track.decided else None
        window = tuple(track.encodings) if record is not None and record.accepted else ()
        return FrameOutcome(
            frame.index, now, faces, person, hint, vote, record, live_state, claim, window
        )

    def _claimable(self, verdict: Verdict) -> bool:
        """The claim step may be offered to this face (``claim required``, or a face
        unknown to a kiosk's automatic set)."""
        unknown = self.claim_unknown and verdict.reason in (UNKNOWN, EMPTY_ROSTER)
        return verdict.reason == CLAIM_REQUIRED or unknown

    def _risky(self, verdict: Verdict, track: _Track) -> bool:
        """A verdict that asks for the challenge: a face the claim step may be offered to,
        or a match of a rider flagged as a lookalike (only a policy that ignores the flag,
        the threshold one, accepts such a rider without a claim)."""
        if self._claimable(verdict):
            return True
        if verdict.person_id is None or not track.encodings:
            return False
        found = self.gallery.verify(fuse(track.encodings), [verdict.person_id]).best
        return found is not None and found.flagged

    def _hold(self, frame: Frame, track: _Track, box: FaceBox, faces: int) -> FrameOutcome:
        decided = track.decided
        assert decided is not None
        now = frame.timestamp
        vote = None
        if (
            track.check_hold
            or track.last_vote_at is None
            or now - track.last_vote_at >= self.config.reverify_s
        ):
            vote, _ = self._decide_face(frame.image, box)
            if vote is None and track.check_hold:
                return FrameOutcome(frame.index, now, faces, None, None)  # not yet checked
            if vote is not None:
                track.last_vote_at = now
                track.check_hold = False
                other = vote.person_id is not None and vote.person_id != decided.person_id
                if other or vote.reason == UNKNOWN:
                    # someone else now: forget the decision and start over from this frame
                    self._track = self._new_track(box, now)
                    return FrameOutcome(frame.index, now, faces, None, None, vote)
        return FrameOutcome(frame.index, now, faces, decided.person_id, None, vote)

    def _record(
        self,
        track: _Track,
        now: float,
        verdict: Verdict,
        reason: str,
        liveness: str,
        accept: bool = True,
    ) -> DecisionRecord:
        record = DecisionRecord(
            person_id=verdict.person_id if accept else None,
            reason=reason,
            distance=verdict.distance,
            margin=verdict.margin,
            threshold=self.policy.threshold,
            required_margin=self.policy.margin,
            model_version=self.engine.model_version,
            frames_used=verdict.frames_used,
            frames_seen=track.frames_seen,
            liveness=liveness,
            roster_people=self.gallery.people,
            started_at=track.started_at,
            decided_at=now,
        )
        track.records.append(record)
        return record


__all__ = [
    "LIVENESS_FAILED",
    "NO_FACE",
    "SEVERAL_FACES",
    "ClaimNeeded",
    "FrameOutcome",
    "LiveConfig",
    "LiveEngine",
    "LivePipeline",
    "nearest_in_roster",
    "small_face_pass",
]
