"""The matcher: exact nearest people, checked against a brute-force float64 search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge.vision.matcher import Gallery, mean_templates
from edge.vision.policy import Candidates


def brute_force(
    person_ids: list[str], matrix: np.ndarray, probe: np.ndarray, k: int
) -> list[tuple[str, float]]:
    """The reference: float64 distances to every template, nearest template per person."""
    distances = np.linalg.norm(matrix.astype(np.float64) - probe.astype(np.float64), axis=1)
    best: dict[str, tuple[float, int]] = {}
    for index, (person, distance) in enumerate(zip(person_ids, distances, strict=True)):
        if person not in best or (distance, index) < best[person]:
            best[person] = (float(distance), index)
    ranked = sorted(best.items(), key=lambda item: item[1])
    return [(person, distance) for person, (distance, _) in ranked[:k]]


def dlib_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Vectors shaped like dlib encodings (values about +-0.2, norms about 1.4), float32-exact."""
    return (rng.normal(0, 0.12, size=(n, 128))).astype(np.float32)


@given(
    seed=st.integers(0, 2**32 - 1),
    templates=st.integers(1, 300),
    people=st.integers(1, 40),
    duplicates=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_search_is_exactly_the_brute_force_result(
    seed: int, templates: int, people: int, duplicates: bool
) -> None:
    rng = np.random.default_rng(seed)
    matrix = dlib_like(rng, templates)
    owners = [f"p{int(i)}" for i in rng.integers(0, people, size=templates)]
    probe = matrix[rng.integers(0, templates)] + rng.normal(0, 0.05, 128).astype(np.float32)
    if duplicates:  # exact ties between different people
        matrix[-1] = matrix[0]
    gallery = Gallery(list(zip(owners, matrix, strict=True)))
    found = gallery.search(probe, k=3)
    expected = brute_force(owners, matrix, probe, 3)
    assert [c.person_id for c in found.nearest] == [person for person, _ in expected]
    assert [c.distance for c in found.nearest] == pytest.approx([d for _, d in expected], abs=1e-12)
    assert found.roster_people == len(set(owners)) and found.roster_templates == templates


def test_near_ties_resolve_like_float64() -> None:
    """Templates a hair apart, where float32 screening alone picks the wrong one: not the search."""
    rng = np.random.default_rng(7)
    screening_mistakes = 0
    for _ in range(200):
        base = rng.normal(0, 3.0, 128).astype(np.float32)  # large norms: float32 rounding bites
        probe = base + rng.normal(0, 0.3, 128).astype(np.float32)
        other = base.copy()
        other[rng.integers(0, 128)] += np.float32(rng.choice([-1, 1]) * 2e-4)
        others = rng.normal(0, 3.0, (30, 128)).astype(np.float32)
        matrix = np.vstack([base, other, others])
        owners = ["first", "second"] + [f"x{i}" for i in range(30)]
        gallery = Gallery(list(zip(owners, matrix, strict=True)))
        got = [(c.person_id, c.distance) for c in gallery.search(probe, k=2).nearest]
        assert got == [
            (p, pytest.approx(d, abs=1e-12)) for p, d in brute_force(owners, matrix, probe, 2)
        ]
        screened = gallery.distances(probe)
        screening_mistakes += owners[int(np.argmin(screened))] != got[0][0]
    assert screening_mistakes > 0, "the test no longer exercises near ties"


def test_several_templates_per_person_and_the_other_person() -> None:
    a1, a2, b1 = np.zeros(128), np.zeros(128), np.zeros(128)
    a1[0], a2[0], b1[1] = 1.0, 0.2, 0.5
    gallery = Gallery([("alice", a1), ("alice", a2), ("bob", b1)])
    found = gallery.search(np.zeros(128))
    assert [c.person_id for c in found.nearest] == ["alice", "bob"]
    assert found.nearest[0].distance == pytest.approx(0.2)
    assert found.nearest[0].template == 1
    assert found.margin == pytest.approx(0.3)


def test_one_person_has_no_margin_and_empty_gallery_has_no_candidates() -> None:
    assert Gallery([("solo", np.ones(128) * 0.1)]).search(np.zeros(128)).margin is None
    empty = Gallery([]).search(np.zeros(128))
    assert empty == Candidates((), 0, 0)


def test_from_matrix_equals_entries_and_rejects_bad_shapes() -> None:
    rng = np.random.default_rng(3)
    matrix = dlib_like(rng, 20)
    ids = [f"p{i % 4}" for i in range(20)]
    probe = dlib_like(rng, 1)[0]
    assert Gallery.from_matrix(ids, matrix).search(probe, 4) == Gallery(
        list(zip(ids, matrix, strict=True))
    ).search(probe, 4)
    with pytest.raises(ValueError, match="128-d"):
        Gallery.from_matrix(["a"], np.zeros((1, 64)))
    with pytest.raises(ValueError, match="2 person ids for 1"):
        Gallery.from_matrix(["a", "b"], np.zeros((1, 128)))
    with pytest.raises(ValueError, match="finite"):
        Gallery.from_matrix(["a"], np.full((1, 128), np.nan))
    with pytest.raises(ValueError, match="probe"):
        Gallery.from_matrix(["a"], np.zeros((1, 128))).search(np.zeros(3))


def test_distances_match_numpy_to_float32_precision() -> None:
    rng = np.random.default_rng(11)
    matrix = dlib_like(rng, 500)
    probe = dlib_like(rng, 1)[0]
    gallery = Gallery.from_matrix([str(i) for i in range(500)], matrix)
    reference = np.linalg.norm(matrix.astype(np.float64) - probe, axis=1)
    assert np.allclose(gallery.distances(probe), reference, atol=2e-5)


def test_decide_keeps_the_old_call_shape() -> None:
    a, b = np.zeros(128), np.zeros(128)
    b[0] = 1.0
    gallery = Gallery([("alice", a), ("bob", b)])
    decision = gallery.decide(np.full(128, 0.01), threshold=0.47, margin=0.08)
    assert decision.person_id == "alice" and decision.reason == "match"


def brute_cohort(
    owners: list[str], matrix: np.ndarray, k: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Per template: mean distance to its k nearest other people; per person: nearest other."""
    m = matrix.astype(np.float64)
    cohort = []
    neighbour: dict[str, float] = {}
    for i, person in enumerate(owners):
        per_person: dict[str, float] = {}
        for j, other in enumerate(owners):
            if other != person:
                d = float(np.linalg.norm(m[i] - m[j]))
                per_person[other] = min(d, per_person.get(other, np.inf))
        ranked = sorted(per_person.values())
        cohort.append(float(np.mean(ranked[:k])))
        neighbour[person] = min(ranked[0], neighbour.get(person, np.inf))
    return np.array(cohort), neighbour


@given(seed=st.integers(0, 2**32 - 1), templates=st.integers(2, 120), people=st.integers(2, 60))
@settings(max_examples=40, deadline=None)
def test_cohorts_and_neighbours_are_the_brute_force_ones(
    seed: int, templates: int, people: int
) -> None:
    rng = np.random.default_rng(seed)
    matrix = dlib_like(rng, templates)
    owners = [f"p{int(i)}" for i in rng.integers(0, people, size=templates)]
    if len(set(owners)) < 2:
        owners[0], owners[-1] = "a", "b"
    gallery = Gallery(list(zip(owners, matrix, strict=True)))
    others = len(set(owners)) - 1
    assert gallery.cohort_size == max(1, min(others, round(0.025 * others)))
    cohort, neighbour = brute_cohort(owners, matrix, gallery.cohort_size)
    probe = matrix[0] + rng.normal(0, 0.02, 128).astype(np.float32)
    found = gallery.search(probe, k=2)
    for candidate in found.nearest:
        assert candidate.cohort == pytest.approx(cohort[candidate.template], abs=1e-9)
        assert candidate.neighbour == pytest.approx(neighbour[candidate.person_id], abs=1e-9)
    # computed on demand (a roster too large to precompute): the same statistic
    large = Gallery(list(zip(owners, matrix, strict=True)), cohort_limit=0)
    assert not large.has_cohort and large.search(probe).best.cohort is None  # type: ignore[union-attr]
    for template in range(min(templates, 5)):
        assert large.cohort_of(template) == pytest.approx(cohort[template], abs=1e-4)


def test_verify_sees_only_the_named_people() -> None:
    rng = np.random.default_rng(11)
    matrix = dlib_like(rng, 30)
    owners = [f"p{i % 10}" for i in range(30)]
    gallery = Gallery(list(zip(owners, matrix, strict=True)), flagged={"p3"})
    probe = matrix[4] + rng.normal(0, 0.01, 128).astype(np.float32)
    found = gallery.verify(probe, ["p3", "p4", "nobody", "p3"])
    assert [c.person_id for c in found.nearest] == ["p4", "p3"]  # nearest first, once each
    expected = brute_force(owners, matrix, probe, 10)
    assert found.nearest[0].distance == pytest.approx(dict(expected)["p4"], abs=1e-12)
    assert [c.flagged for c in found.nearest] == [False, True]
    assert gallery.search(probe).best.flagged is False  # type: ignore[union-attr]
    assert "p4" in gallery and "nobody" not in gallery
    assert gallery.verify(probe, ["nobody"]).nearest == ()


def test_a_roster_of_one_has_no_cohort_and_lookalikes_are_listed() -> None:
    one = Gallery([("ann", np.zeros(128, dtype=np.float32))])
    assert one.cohort_size == 0 and one.cohort_of(0) is None
    assert one.search(np.zeros(128)).best.cohort is None  # type: ignore[union-attr]
    twin = np.full(128, 0.01, dtype=np.float32)
    far = np.full(128, 0.2, dtype=np.float32)
    gallery = Gallery([("ann", np.zeros(128)), ("twin", twin), ("far", far)])
    assert sorted(p for p, _ in gallery.lookalikes(0.45)) == ["ann", "twin"]


def test_mean_templates_gives_each_person_the_mean_of_theirs() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(0.0, 0.1, (5, 128))
    people, matrix = mean_templates(["bob", "ann", "bob", "cy", "bob"], vectors)
    assert people == ["bob", "ann", "cy"]  # in order of first appearance
    assert matrix.dtype == np.float32 and matrix.shape == (3, 128)
    np.testing.assert_allclose(matrix[0], vectors[[0, 2, 4]].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(matrix[1], vectors[1], atol=1e-6)
    gallery = Gallery.from_matrix(people, matrix)
    assert gallery.search(vectors[[0, 2, 4]].mean(axis=0)).best.person_id == "bob"
    with pytest.raises(ValueError, match="3 person ids for 5 templates"):
        mean_templates(["a", "b", "c"], vectors)


@given(seed=st.integers(0, 2**32 - 1), templates=st.integers(1, 200), people=st.integers(1, 30))
@settings(max_examples=60, deadline=None)
def test_nearer_than_agrees_with_the_brute_force_search(
    seed: int, templates: int, people: int
) -> None:
    rng = np.random.default_rng(seed)
    matrix = dlib_like(rng, templates)
    person_ids = [f"p{int(i)}" for i in rng.integers(0, people, templates)]
    gallery = Gallery.from_matrix(person_ids, matrix)
    probe = dlib_like(rng, 1)[0]
    ranked = brute_force(person_ids, matrix, probe, k=people)
    matched, distance = ranked[0]
    others = [d for person, d in ranked if person != matched]
    assume(not others or others[0] - distance > 1e-3)  # float32 rounding decides a near tie
    assert not gallery.nearer_than(probe, distance, matched)  # nobody else that near
    if others:  # a wider radius reaches the next person
        assert gallery.nearer_than(probe, others[0] + 1e-3, matched)
    assert not Gallery([]).nearer_than(probe, 1.0, matched)
