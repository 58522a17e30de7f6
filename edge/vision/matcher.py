"""The matching decision: nearest enrolled template, a threshold and a margin.

Pure code: templates and a probe encoding in, a ``Decision`` out. A probe is accepted as
a person only when its distance to that person's nearest template is under the threshold
and the nearest *other* person is at least ``margin`` further away. A ``Decision`` never
holds a template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.floating]

ENCODING_SIZE = 128


@dataclass(frozen=True)
class Decision:
    """The outcome for one face: who it is (or ``None``) and why."""

    person_id: str | None
    distance: float | None
    margin: float | None
    reason: str  # "match", "unknown", "ambiguous", "empty roster"


class Gallery:
    """Enrolled templates as one float32 matrix with precomputed squared norms."""

    def __init__(self, entries: Sequence[tuple[str, Vector]]) -> None:
        self.person_ids: tuple[str, ...] = tuple(person for person, _ in entries)
        if entries:
            matrix = np.stack([np.asarray(vector, dtype=np.float32) for _, vector in entries])
        else:
            matrix = np.zeros((0, ENCODING_SIZE), dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != ENCODING_SIZE:
            raise ValueError(
                f"templates must be {ENCODING_SIZE}-d vectors, got shape {matrix.shape}"
            )
        self._matrix = matrix
        self._norms = np.einsum("ij,ij->i", matrix, matrix)
        self._owner = np.array(self.person_ids, dtype=object)

    def __len__(self) -> int:
        return len(self.person_ids)

    @property
    def people(self) -> int:
        return len(set(self.person_ids))

    def distances(self, probe: Vector) -> npt.NDArray[np.float32]:
        """Euclidean distance from ``probe`` to every template."""
        query = np.asarray(probe, dtype=np.float32)
        squared = self._norms - 2.0 * (self._matrix @ query) + float(query @ query)
        result: npt.NDArray[np.float32] = np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)
        return result

    def decide(self, probe: Vector, threshold: float, margin: float) -> Decision:
        """Accept the nearest person only under ``threshold`` and ``margin`` ahead of the next."""
        if len(self) == 0:
            return Decision(None, None, None, "empty roster")
        distances = self.distances(probe)
        best = int(np.argmin(distances))
        best_person = self.person_ids[best]
        best_distance = float(distances[best])
        others = distances[self._owner != best_person]
        gap = float(others.min()) - best_distance if others.size else None
        if best_distance >= threshold:
            return Decision(None, best_distance, gap, "unknown")
        if gap is not None and gap < margin:
            return Decision(None, best_distance, gap, "ambiguous")
        return Decision(best_person, best_distance, gap, "match")
