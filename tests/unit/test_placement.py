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


def place(nodes: list[Candidate], count: int) -> list[str]:
    """Run `count` placements in a row, each adding its session to the chosen node."""
    current = {n.name: n for n in nodes}
    placed = []
    for _ in range(count):
        open_nodes = [n for n in current.values() if n.live_sessions < n.capacity]
        name = choose_lss(list(current.values()))
        assert name is not None
        # each pick is a least loaded node with room, whatever came before
        assert load_score(current[name]) == min(load_score(n) for n in open_nodes)
        placed.append(name)
        n = current[name]
        current[name] = Candidate(n.name, n.capacity, n.live_sessions + 1, n.load)
    return placed


def test_repeated_placement_follows_load_not_round_robin():
    """A node under CPU pressure, listed first, gets nothing until the idle one is as loaded.

    Round robin would alternate and first-fit would start on `busy`; a random placer follows
    the least loaded node at all 11 picks where both have room with probability 2**-11.
    """
    placed = place([node("busy", capacity=8, cpu=0.9), node("idle", capacity=8, cpu=0.0)], 16)
    assert placed[:3] == ["idle", "idle", "idle"]
    assert sorted(placed) == ["busy"] * 8 + ["idle"] * 8  # then both fill up


def test_equally_loaded_nodes_fill_in_proportion_to_capacity():
    """Half the total capacity placed leaves each node half full.

    Round robin would give 4 and 4 and first-fit 4 and 4 (`small` is listed first); a random
    placer passes with p ≈ 0.02.
    """
    placed = place([node("small", capacity=4), node("large", capacity=12)], 8)
    assert sorted(placed) == ["large"] * 6 + ["small"] * 2
