"""Placement onto chips (greedy vs METIS), X-Y routes between chips, boards too small, and the per-step
latency (a bottleneck, not a sum) and energy of a mapping, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from spikecc.compiler.mapping import map_graph
from spikecc.compiler.mapping.place import CoreEdges, _repair, chip_routes


def test_the_partitioner_sends_fewer_spikes_between_chips_than_greedy(lm_lowered, profile):
    g, activity = lm_lowered("spikelm")  # measured on the build's calibration text
    target = profile("small-chips", **{"chip.cores": 16})
    greedy = map_graph(g, target, activity=activity, placement="greedy")
    metis = map_graph(g, target, activity=activity, placement="metis")
    assert greedy.n_cores == metis.n_cores and greedy.chips == metis.chips >= 3
    assert greedy.placement.interchip_msgs > 0  # routed spikes of one layer feed the next layers' cores
    assert metis.placement.interchip_msgs < greedy.placement.interchip_msgs
    assert all(np.bincount(metis.placement.chip_of) <= 16)
    auto = map_graph(g, target, activity=activity)
    assert auto.placement.method == "metis"
    assert auto.placement.alternatives == {"greedy": greedy.placement.interchip_msgs,
                                           "metis": metis.placement.interchip_msgs}
    again = map_graph(g, target, activity=activity, placement="metis")
    assert np.array_equal(again.placement.chip_of, metis.placement.chip_of)  # deterministic


def test_capacity_repair_moves_the_least_connected_cores():
    # path 0-1-2-3 (weights 5, 5, 1) plus a lone core 4, all in part 0; a chip holds 3 cores
    xadj = np.array([0, 1, 3, 5, 6, 6])
    adj = np.array([1, 0, 2, 1, 3, 2])
    w = np.array([5, 5, 5, 1, 1, 1])
    parts = _repair(np.array([0, 0, 0, 0, 0]), xadj, adj, w, k=2, cap=3)
    assert np.bincount(parts, minlength=2).tolist() == [3, 2]
    assert parts[4] == 1 and parts[3] == 1  # no ties to part 0 first, then the weakest tie


def test_messages_between_chips_follow_x_then_y():
    chip_xy = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])  # 2 x 2 chip mesh
    chip_of = np.array([0, 3, 1])
    edges = CoreEdges(src=np.array([0, 2]), dst=np.array([1, 0]), msgs=np.array([5.0, 2.0]),
                      bits=np.array([100.0, 40.0]))
    msgs, hop_msgs, links = chip_routes(chip_of, chip_xy, edges)
    assert msgs == 7.0 and hop_msgs == 5.0 * 2 + 2.0 * 1
    assert links == {(0, 1): 100.0, (1, 3): 100.0, (1, 0): 40.0}


def test_a_partly_filled_mesh_row_is_left_along_y_first():
    chip_xy = np.array([[0, 0], [1, 0], [0, 1]])  # 3 chips, 2 per mesh row: (1, 1) is empty
    edges = CoreEdges(src=np.array([0, 1]), dst=np.array([1, 2]), msgs=np.array([3.0, 2.0]),
                      bits=np.array([30.0, 20.0]))
    msgs, hop_msgs, links = chip_routes(np.array([2, 1, 0]), chip_xy, edges)
    # chip 2 -> chip 1: x first would pass (1, 1); it goes (0, 1) -> (0, 0) -> (1, 0) instead
    assert msgs == 5.0 and hop_msgs == 3.0 * 2 + 2.0 * 1
    assert links == {(2, 0): 30.0, (0, 1): 30.0, (1, 0): 20.0}


def test_a_board_too_small_is_a_named_violation(lm_lowered, profile):
    g, activity = lm_lowered("spikegpt")
    m = map_graph(g, profile("tiny-chips", **{"chip.cores": 4}), activity=activity, chips=1)
    (v,) = m.violations
    assert (v.layer, v.resource, v.value, v.limit) == ("(whole network)", "chips", m.chips, 1)
    assert m.chips == -(-m.n_cores // 4) > 1 and f"at least {m.chips} chips" in v.fix


def test_latency_is_the_bottleneck_and_energy_sums_the_operations(loihi_chain):
    m = map_graph(loihi_chain([10, 20]), activity={"input": 0.5, "lif0": 0.25})
    # per step: 5 graded input events (8-bit payload) x 20 synapses; 20 neurons; 5 spikes, each sent to the host
    synops, neurons, spikes, host_in, host_out = 100, 20, 5, 5, 5
    core_ns = synops * 4.7 + neurons * 6.0 + spikes * 30.0 + host_out * 5.1  # loihi2 time figures
    host_ns = (host_in * (32 + 8) + host_out * 32) / 8 / 0.125  # bits -> bytes over 0.125 GB/s
    assert m.latency["slowest_core_ns"] == pytest.approx(core_ns)
    assert m.latency["host_link_ns"] == pytest.approx(host_ns)
    assert m.latency["step_ns"] == pytest.approx(max(core_ns, host_ns) + 299.0)  # not their sum
    assert "core 0" in m.latency["bottleneck"]
    dynamic = synops * 35.5 + neurons * 51.2 + spikes * 69.3 + (host_in + host_out) * 111.0
    static = 0.232 * m.latency["step_ns"] * 1e3  # W x ns = 1e3 pJ
    assert m.energy["dynamic_step_pj"] == pytest.approx(dynamic)
    assert m.energy["step_pj"] == pytest.approx(dynamic + static)
    assert m.link_classes["host_in"]["msgs"] == host_in and m.link_classes["host_out"]["msgs"] == host_out
