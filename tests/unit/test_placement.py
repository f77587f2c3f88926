"""Placement: the least loaded LSS with room wins; load, not turn order, decides; a node's
room is its capacity and the memory its sessions may take, of which each live session reserves
what its session type declares."""

from __future__ import annotations

from twinstack.services.gss import Candidate, choose_lss, load_score, reserved_mb
from twinstack.sessiontypes import SESSION_TYPE_NEEDS, Needs

SMALL = Needs(cpus=0.25, memory_mb=600)


def node(name: str, live: int = 0, capacity: int = 4, cpu: float = 0.1,
         memory: float = 0.3) -> Candidate:
    return Candidate(name, capacity, live, {"cpu": cpu, "memory": memory})


def choose(nodes: list[Candidate], needs: Needs = SMALL) -> str | None:
    return choose_lss(nodes, needs)


def test_fewer_sessions_per_capacity_wins():
    assert choose([node("a", live=2), node("b", live=1)]) == "b"
    assert choose([node("a", live=2, capacity=8), node("b", live=1, capacity=2)]) == "a"


def test_a_busy_cpu_or_full_memory_loses():
    assert choose([node("a", cpu=0.95), node("b", cpu=0.05)]) == "b"
    assert choose([node("a", memory=0.9), node("b", memory=0.2)]) == "b"


def test_full_nodes_are_skipped_and_none_means_no_room():
    assert choose([node("a", live=4), node("b", live=3, cpu=1.0)]) == "b"
    assert choose([node("a", live=4), node("b", live=4)]) is None
    assert choose([]) is None


def place(nodes: list[Candidate], count: int) -> list[str]:
    """Run `count` placements in a row, each adding its session to the chosen node."""
    current = {n.name: n for n in nodes}
    placed = []
    for _ in range(count):
        open_nodes = [n for n in current.values() if n.live_sessions < n.capacity]
        name = choose(list(current.values()))
        assert name is not None
        # each pick is a least loaded node with room, whatever came before
        assert load_score(current[name]) == min(load_score(n) for n in open_nodes)
        placed.append(name)
        n = current[name]
        current[name] = n.with_session(SMALL)
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


def test_a_session_goes_only_where_the_memory_it_needs_is_not_reserved():
    big = Needs(cpus=0.25, memory_mb=1600)
    roomy = Candidate("roomy", 8, 1, {}, memory_mb=4000, reserved_mb=600)
    tight = Candidate("tight", 8, 1, {}, memory_mb=2000, reserved_mb=600)
    assert choose([tight], SMALL) == "tight"  # 1200 of 2000
    assert choose([tight], big) is None  # 2200 > 2000, though 7 of its 8 places are free
    assert choose([tight, roomy], big) == "roomy"
    assert choose([tight.with_session(SMALL)], SMALL) == "tight"  # 1800
    assert choose([tight.with_session(SMALL).with_session(SMALL)], SMALL) is None  # 2400
    said_nothing = Candidate("old", 8, 7, {})  # an LSS that did not say: its capacity only
    assert choose([said_nothing], big) == "old"
    assert choose([said_nothing.with_session(big)], big) is None


def test_reserved_memory_fills_a_node_as_sessions_do():
    """Half its memory reserved counts as half full, whatever the count of sessions says."""
    half = Candidate("half", 16, 1, {}, memory_mb=4000, reserved_mb=2000)
    quarter = Candidate("quarter", 16, 4, {}, memory_mb=4000, reserved_mb=1000)
    assert load_score(half) == 0.25 and load_score(quarter) == 0.125
    assert choose([half, quarter]) == "quarter"


def test_live_sessions_reserve_their_types_needs():
    analysis, simulation = (SESSION_TYPE_NEEDS[t].memory_mb
                            for t in ("data analysis", "3D simulation"))
    assert reserved_mb({"data analysis": 2, "3D simulation": 1}) == 2 * analysis + simulation
    largest = max(n.memory_mb for n in SESSION_TYPE_NEEDS.values())
    assert reserved_mb({"a type no longer offered": 1}) == largest
