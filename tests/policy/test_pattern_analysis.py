"""Reasoning about object patterns: cover, overlap, literal prefix and examples, checked against
the matcher itself."""

from __future__ import annotations

import itertools
import random

import pytest

from outbox.policy.matching import (
    example_objects,
    literal_prefix,
    object_match,
    pattern_covers,
    patterns_intersect,
    template_to_pattern,
)


@pytest.mark.parametrize(
    ("outer", "inner", "covers"),
    [
        ("http:h/**", "http:h/a/**", True),
        ("http:h/**", "http:h/a/b", True),
        ("http:h/**", "http:h", True),
        ("http:h/a/**", "http:h/**", False),
        ("http:*/**", "http:127.0.0.1:8765/**", True),
        ("http:127.0.0.1:*/**", "http:127.0.0.1:*/admin/**", True),
        ("http:127.0.0.1:*/admin/**", "http:127.0.0.1:*/**", False),
        ("k8s:*/namespace/*", "k8s:prod/namespace/web", True),
        ("k8s:*/namespace/*", "k8s:prod/namespace/web/deployment/x", False),
        ("mail:d/*@example.com", "mail:d/*@*.example.com", False),
        ("mail:d/*example.com", "mail:d/*@example.com", True),
        ("a*", "ab*", True),
        ("ab*", "a*", False),
    ],
)
def test_pattern_cover(outer: str, inner: str, covers: bool) -> None:
    assert pattern_covers(outer, inner) is covers


@pytest.mark.parametrize(
    ("a", "b", "meet"),
    [
        ("http:{authority}/**", "http:127.0.0.1:*/admin/**", True),
        ("mail:agents.example.com/{recipient}", "mail:marketing.example.com/*", False),
        ("mail:agents.example.com/{recipient}", "mail:agents.example.com/*@example.org", True),
        ("k8s:{cluster}/namespace/{name}", "k8s:prod/namespace/*/deployment/*", False),
        ("k8s:{cluster}/namespace/{name}", "k8s:prod/**", True),
        ("a*b", "*c", False),
        ("a*", "*b", True),
    ],
)
def test_pattern_intersection(a: str, b: str, meet: bool) -> None:
    assert patterns_intersect(template_to_pattern(a), template_to_pattern(b)) is meet


def test_literal_prefix_is_what_every_match_starts_with() -> None:
    assert literal_prefix("http:h:*/a") == "http:h:"
    assert literal_prefix("http:h/**") == "http:h"  # `http:h` itself matches
    assert literal_prefix("http:h/x") == "http:h/x"


def test_examples_match_their_pattern() -> None:
    for pattern in ["http:127.0.0.1:*/admin/**", "mail:d/*@example.com", "k8s:{cluster}/namespace/{name}"]:
        (example,) = example_objects(pattern)
        assert object_match(example, template_to_pattern(pattern))


def _random_pattern(rng: random.Random) -> str:
    segments = [rng.choice(["a", "b", "ab", "*", "a*", "*b", ""]) for _ in range(rng.randint(1, 3))]
    return "/".join(segments) + ("/**" if rng.random() < 0.3 else "")


WORDS = ["/".join(p) for n in range(1, 5) for p in itertools.product(["a", "b", "ab", "ba", ""], repeat=n)]


def test_cover_and_intersection_are_sound_against_the_matcher() -> None:
    """A claimed cover never has a counterexample; a denied overlap never has a common match."""
    rng = random.Random(7)
    for _ in range(600):
        p, q = _random_pattern(rng), _random_pattern(rng)
        p_words = {w for w in WORDS if object_match(w, p)}
        q_words = {w for w in WORDS if object_match(w, q)}
        if pattern_covers(p, q):
            assert q_words <= p_words, (p, q)
        if not patterns_intersect(p, q):
            assert not (p_words & q_words), (p, q)
