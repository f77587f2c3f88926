"""Placement: the least loaded LSS with room wins; load, not turn order, decides."""

from __future__ import annotations

from twinstack.services.gss import Candidate, choose_lss, load_score


def node(name: str, live: int = 0, capacity: int = 4, cpu: float = 0.1,
         memory: float = 0.3) -> Candidate:
    return Candidate(name, capacity, live, {"cpu": cpu, "memory": memory})


def test_fewer_sessions_per_capacity_wins():
    assert choose_lss([node("a", live=2), node("b", live=1)]) == "b"
    assert choose_lss([node("a", live=2, capacity=8), node("b", live=1, capacity=2)]) == "a"


def test_a_busy_cpu_or_full_memory_loses():
    assert choose_lss([node("a", cpu=0.95), node("b", cpu=0.05)]) == "b"
    assert choose_lss([node("a", memory=0.9), node("b", memory=0.2)]) == "b"


def test_full_nodes_are_skipped_and_none_means_no_room():
    assert choose_lss([node("a", live=4), node("b", live=3, cpu=1.0)]) == "b"
    assert choose_lss([node("a", live=4), node("b", live=4)]) is None
    assert choose_lss([]) is None


def test_repeated_placement_follows_load_not_round_robin():
    nodes = {"small": node("small", capacity=1), "large": node("large", capacity=3)}
    placed = []
    for _ in range(4):
        name = choose_lss(list(nodes.values()))
        assert name is not None
        placed.append(name)
        n = nodes[name]
        nodes[name] = Candidate(n.name, n.capacity, n.live_sessions + 1, n.load)
    assert sorted(placed) == ["large", "large", "large", "small"]
    assert load_score(nodes["large"]) > load_score(node("idle"))
