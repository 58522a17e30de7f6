"""The in-memory roster matrix: exact nearest enrolled people for a probe encoding.

Templates sit in one float32 matrix (dlib computes its encodings in float32, so nothing is
lost) with their squared norms precomputed. A search screens every template with one
matrix-vector product (``|t|² - 2 t·q + |q|²``), then recomputes in float64, by the
difference, every template within a rounding bound of the best: the result is the same
nearest template and distance as a brute-force float64 search, at a fraction of its cost
(100,000 templates in about 4 ms on one core).

Templates of one person share an integer label, so "the nearest *other* person" is a mask
over an int32 array.

When the gallery is built (so again on every roster swap) it also computes, for rosters
up to ``cohort_limit`` templates, each template's **cohort**: the mean distance to its
``k`` nearest other people, ``k = max(1, round(COHORT_FRACTION * (people - 1)))`` (10 at
400 people: a statistic of the same quantile of the neighbourhood at any roster size),
and each person's **neighbour**: how close the nearest other person comes to any of their
templates (lookalikes). Both travel with the candidates to the policy. ``verify`` gives the
distance to named people only (the claim step's 1:1 or 1:few check), computing a cohort on
demand when the roster was too large to precompute them.

``mean_templates`` folds a rider's templates into one, their mean: the kiosk's galleries are
built from it when ``vision.fuse_templates`` is on (the default).

Pure code: vectors in, ``Candidates`` out; nothing here logs or prints a template.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt

from edge.vision.policy import Candidate, Candidates, Decision, ThresholdMarginPolicy

Vector = npt.NDArray[np.floating]

ENCODING_SIZE = 128
# Relative bound on the float32 screening error, kept generous: candidates within it of the
# best are re-ranked exactly.
_SCREEN_TOLERANCE = 1e-4
COHORT_FRACTION = 0.025
COHORT_LIMIT = 5_000  # templates: 0.35 s to precompute on the 2-core dev machine (O(n²))
_BLOCK = 512

__all__ = [
    "ENCODING_SIZE",
    "Candidate",
    "Candidates",
    "Decision",
    "Gallery",
    "Vector",
    "mean_templates",
    "rider_gallery",
]


def mean_templates(
    person_ids: Sequence[str], vectors: npt.ArrayLike
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """One template per person: the mean of their templates (people in order of first
    appearance). A rider enrolled from several photos is matched against the centre of
    them, which sits nearer to that rider's other pictures than any single photo does
    (docs/face-pipeline.md, Enrolment)."""
    matrix = np.asarray(vectors, dtype=np.float64).reshape(-1, ENCODING_SIZE)
    if len(person_ids) != matrix.shape[0]:
        raise ValueError(f"{len(person_ids)} person ids for {matrix.shape[0]} templates")
    people = list(dict.fromkeys(person_ids))
    index = {person: row for row, person in enumerate(people)}
    labels = np.fromiter((index[p] for p in person_ids), dtype=np.intp, count=len(person_ids))
    sums = np.zeros((len(people), ENCODING_SIZE))
    np.add.at(sums, labels, matrix)
    counts = np.bincount(labels, minlength=len(people)).reshape(-1, 1)
    return people, (sums / counts).astype(np.float32)


def rider_gallery(
    person_ids: Sequence[str],
    vectors: Sequence[Vector],
    flagged: Collection[str] = (),
    fuse: bool = True,
) -> Gallery:
    """The gallery of these templates as the kiosk builds it: with ``fuse``
    (``vision.fuse_templates``) one template per rider, the mean of theirs."""
    if not vectors:
        return Gallery([])
    if fuse:
        people, matrix = mean_templates(person_ids, vectors)
        return Gallery.from_matrix(people, matrix, flagged)
    return Gallery.from_matrix(person_ids, vectors, flagged)


class Gallery:
    """Enrolled templates as one float32 matrix with precomputed squared norms."""

    def __init__(
        self,
        entries: Sequence[tuple[str, Vector]],
        flagged: Collection[str] = (),
        cohort_limit: int = COHORT_LIMIT,
    ) -> None:
        person_ids = [person for person, _ in entries]
        if entries:
            matrix = np.stack([np.asarray(vector, dtype=np.float32) for _, vector in entries])
        else:
            matrix = np.zeros((0, ENCODING_SIZE), dtype=np.float32)
        self._init(person_ids, matrix, flagged, cohort_limit)

    @classmethod
    def from_matrix(
        cls,
        person_ids: Sequence[str],
        matrix: npt.ArrayLike,
        flagged: Collection[str] = (),
        cohort_limit: int = COHORT_LIMIT,
    ) -> Gallery:
        """A gallery from one row per template (no per-row copies: fast for big rosters)."""
        gallery = cls.__new__(cls)
        gallery._init(list(person_ids), np.asarray(matrix, dtype=np.float32), flagged, cohort_limit)
        return gallery

    def _init(
        self,
        person_ids: list[str],
        matrix: npt.NDArray[np.float32],
        flagged: Collection[str],
        cohort_limit: int,
    ) -> None:
        if matrix.ndim != 2 or matrix.shape[1] != ENCODING_SIZE:
            raise ValueError(
                f"templates must be {ENCODING_SIZE}-d vectors, got shape {matrix.shape}"
            )
        if len(person_ids) != matrix.shape[0]:
            raise ValueError(f"{len(person_ids)} person ids for {matrix.shape[0]} templates")
        if not np.isfinite(matrix).all():
            raise ValueError("templates must be finite numbers")
        self.person_ids: tuple[str, ...] = tuple(person_ids)
        self._matrix = np.ascontiguousarray(matrix)
        self._norms = np.einsum("ij,ij->i", self._matrix, self._matrix)
        self._max_norm = float(self._norms.max()) if len(self._norms) else 0.0
        people, labels = np.unique(np.array(person_ids, dtype=object), return_inverse=True)
        self._people: tuple[str, ...] = tuple(str(p) for p in people)
        self._labels = labels.astype(np.int32).reshape(-1)
        self._index = {person: label for label, person in enumerate(self._people)}
        marked = set(flagged)
        self._flagged = np.array([p in marked for p in self._people], dtype=bool)
        self._order: npt.NDArray[np.intp] | None = None
        self._starts: npt.NDArray[np.intp] | None = None
        self._cohort: npt.NDArray[np.float64] | None = None
        self._neighbour: npt.NDArray[np.float64] | None = None
        if 0 < len(self) <= cohort_limit and self.people > 1:
            self._cohort, nearest = self._cohort_stats()
            self._neighbour = np.full(self.people, np.inf)
            np.minimum.at(self._neighbour, self._labels, nearest)

    def __len__(self) -> int:
        return len(self.person_ids)

    @property
    def people(self) -> int:
        return len(self._people)

    @property
    def nbytes(self) -> int:
        return int(self._matrix.nbytes + self._norms.nbytes + self._labels.nbytes)

    @property
    def matrix(self) -> npt.NDArray[np.float32]:
        """The templates, one row each (a read-only view)."""
        view = self._matrix.view()
        view.flags.writeable = False
        return view

    @property
    def has_cohort(self) -> bool:
        return self._cohort is not None

    @property
    def cohort_size(self) -> int:
        """How many nearest other people make a template's cohort."""
        others = self.people - 1
        return max(1, min(others, round(COHORT_FRACTION * others))) if others > 0 else 0

    # -- cohorts and lookalikes ------------------------------------------------------------

    def _grouping(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Templates in label order, and where each label's run starts."""
        if self._order is None or self._starts is None:
            order = np.argsort(self._labels, kind="stable")
            ordered = self._labels[order]
            self._order = order
            self._starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        return self._order, self._starts

    def _per_person(self, squared: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Each row's squared distance to every person (their nearest template)."""
        order, starts = self._grouping()
        reduced: npt.NDArray[np.float64] = np.minimum.reduceat(squared[:, order], starts, axis=1)
        return reduced

    def _cohort_stats(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Each template's cohort and its distance to the nearest other person."""
        k = self.cohort_size
        order, starts = self._grouping()
        matrix = self._matrix.astype(np.float64)
        grouped = matrix[order]  # columns in label order: one reduceat per block, no copy
        grouped_norms = np.einsum("ij,ij->i", grouped, grouped)
        cohort = np.empty(len(self))
        nearest = np.empty(len(self))
        for lo in range(0, len(self), _BLOCK):
            rows = matrix[lo : lo + _BLOCK]
            squared = np.einsum("ij,ij->i", rows, rows)[:, None] + grouped_norms[None, :]
            squared -= 2.0 * (rows @ grouped.T)
            people = np.minimum.reduceat(squared, starts, axis=1)
            people[np.arange(len(rows)), self._labels[lo : lo + _BLOCK]] = np.inf
            closest = np.sqrt(np.maximum(np.partition(people, k - 1, axis=1)[:, :k], 0.0))
            cohort[lo : lo + _BLOCK] = closest.mean(axis=1)
            nearest[lo : lo + _BLOCK] = closest.min(axis=1)
        return cohort, nearest

    def cohort_of(self, template: int) -> float | None:
        """One template's cohort (precomputed, or computed now for a large roster)."""
        if self._cohort is not None:
            return float(self._cohort[template])
        k = self.cohort_size
        if k == 0:
            return None
        squared = self._screen(self._matrix[template]).astype(np.float64)  # a statistic:
        people = self._per_person(squared[None, :])[0]  # float32 screening is precise enough
        people[self._labels[template]] = np.inf
        return float(np.sqrt(np.maximum(np.partition(people, k - 1)[:k], 0.0)).mean())

    def lookalikes(self, distance: float) -> list[tuple[str, float]]:
        """People whose nearest other person is closer than ``distance`` (needs cohorts)."""
        if self._neighbour is None:
            return []
        close = np.flatnonzero(self._neighbour < distance)
        return [(self._people[i], float(self._neighbour[i])) for i in close]

    # -- search ---------------------------------------------------------------------------

    def distances(self, probe: Vector) -> npt.NDArray[np.float32]:
        """Euclidean distance from ``probe`` to every template (float32 screening values)."""
        return np.sqrt(np.maximum(self._screen(probe), 0.0)).astype(np.float32)

    def _screen(self, probe: Vector) -> npt.NDArray[np.float32]:
        query = np.asarray(probe, dtype=np.float32).reshape(-1)
        if query.shape != (ENCODING_SIZE,):
            raise ValueError(f"a probe must be a {ENCODING_SIZE}-d vector, got {query.shape}")
        # numpy's own single-threaded loop, not BLAS: BLAS's thread pool gives the same mean
        # but long tail latencies on a busy 2-4 core kiosk (the encoder runs beside it)
        dots = np.einsum("ij,j->i", self._matrix, query)
        squared: npt.NDArray[np.float32] = self._norms - 2.0 * dots
        squared += np.float32(query @ query)
        return squared

    def _candidate(self, label: int, distance: float, template: int) -> Candidate:
        return Candidate(
            self._people[label],
            distance,
            template,
            None if self._cohort is None else float(self._cohort[template]),
            None if self._neighbour is None else float(self._neighbour[label]),
            bool(self._flagged[label]),
        )

    def nearer_than(self, probe: Vector, distance: float, person_id: str) -> bool:
        """Whether a template of anyone but ``person_id`` lies within ``distance`` of
        ``probe`` (a rider nearer than a match): one pass over the float32 matrix, no
        ranking, so a roster of 100,000 costs a few milliseconds."""
        if len(self) == 0:
            return False
        squared = self._screen(probe)
        label = self._index.get(person_id, -1)
        near = squared <= np.float32(distance) ** 2 + 1e-4  # float32 rounding: keep ties
        return bool(np.any(near & (self._labels != label)))

    def search(self, probe: Vector, k: int = 2) -> Candidates:
        """The ``k`` nearest people (each by their nearest template), exactly, nearest first."""
        if len(self) == 0:
            return Candidates((), 0, 0)
        exact_probe = np.asarray(probe, dtype=np.float64).reshape(-1)
        squared = self._screen(probe)
        tolerance = _SCREEN_TOLERANCE * (self._max_norm + float(exact_probe @ exact_probe) + 1.0)
        nearest: list[Candidate] = []
        for _ in range(min(k, self.people)):
            low = float(squared.min())
            if not np.isfinite(low):
                break
            close = np.flatnonzero(squared <= low + tolerance)
            diff = self._matrix[close].astype(np.float64) - exact_probe
            exact = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            # ties go to the lowest template index, as argmin over a brute-force array does
            pick = 0 if len(close) == 1 else int(np.lexsort((close, exact))[0])
            template = int(close[pick])
            label = int(self._labels[template])
            nearest.append(self._candidate(label, float(exact[pick]), template))
            squared[self._labels == label] = np.inf
        return Candidates(tuple(nearest), self.people, len(self))

    def verify(self, probe: Vector, person_ids: Sequence[str]) -> Candidates:
        """The named people only (those enrolled), each by their nearest template, nearest first.

        Their cohorts come from the precomputed statistics, or are computed now (one pass
        over the roster per person) when the roster is too large to precompute them.
        """
        exact_probe = np.asarray(probe, dtype=np.float64).reshape(-1)
        if exact_probe.shape != (ENCODING_SIZE,):
            raise ValueError(f"a probe must be a {ENCODING_SIZE}-d vector, got {exact_probe.shape}")
        found = []
        for person in dict.fromkeys(person_ids):
            label = self._index.get(person)
            if label is None:
                continue
            templates = np.flatnonzero(self._labels == label)
            diff = self._matrix[templates].astype(np.float64) - exact_probe
            exact = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            pick = int(np.argmin(exact))
            template = int(templates[pick])
            candidate = self._candidate(label, float(exact[pick]), template)
            if candidate.cohort is None:
                candidate = Candidate(
                    candidate.person_id,
                    candidate.distance,
                    template,
                    self.cohort_of(template),
                    candidate.neighbour,
                    candidate.flagged,
                )
            found.append(candidate)
        found.sort(key=lambda c: (c.distance, c.template))
        return Candidates(tuple(found), self.people, len(self))

    def __contains__(self, person_id: object) -> bool:
        return person_id in self._index

    def decide(self, probe: Vector, threshold: float, margin: float) -> Decision:
        """Accept the nearest person only under ``threshold`` and ``margin`` ahead of the next."""
        return ThresholdMarginPolicy(threshold, margin).decide(self.search(probe))
