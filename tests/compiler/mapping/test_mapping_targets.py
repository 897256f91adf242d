"""Target profiles: shipped data files with a source and confidence for every figure, user profiles by path,
one-line errors for anything malformed."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikecc.compiler.mapping import TargetError, builtin_targets, load_target
from spikecc.compiler.mapping.target import SCHEMA


def write_profile(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["loihi2", "loihi1"])
def test_builtin_profiles_state_source_and_confidence_of_every_figure(name):
    t = load_target(name)
    assert set(t.figures) == set(SCHEMA)
    for key, fig in t.figures.items():
        assert fig.confidence in ("documented", "measured", "inferred"), key
        assert len(fig.source) > 15, key  # says where the number comes from


def test_builtin_profiles_hold_the_published_figures():
    l2, l1 = load_target("loihi2"), load_target("loihi1")
    # Lava's mapper: 120 cores per Loihi 2 chip (lava magma/compiler/subcompilers/constants.py), 128 on Loihi 1
    assert l2["chip.cores"] == 120 and l2["chip.physical_cores"] == 128 and l1["chip.cores"] == 128
    # Intel's compiler log: SynMem register limit 12000 per core
    assert l2["core.synmem_units"] == 12000 and l2.figures["core.synmem_units"].confidence == "measured"
    # nengo-loihi block.py: MAX_COMPARTMENTS, MAX_IN_AXONS, MAX_OUT_AXONS, MAX_SYNAPSE_BITS
    assert (l1["core.neurons"], l1["core.axons_in"], l1["core.axons_out"], l1["core.synmem_units"]) == \
        (1024, 4096, 4096, 1048576)
    assert l1["message.graded_bits"] == 0 and l2["message.graded_bits"] == 32
    assert sorted(builtin_targets()) == ["loihi1", "loihi2"]


def test_user_profile_starts_from_a_builtin_and_overrides_figures(tmp_path):
    p = write_profile(tmp_path / "small.toml", """
[target]
name = "small"
base = "loihi2"
[core.synmem_units]
value = 6000
[core.neurons]
value = 512
confidence = "measured"
source = "my measurement"
""")
    t = load_target(p)
    assert t.name == "small" and t["core.synmem_units"] == 6000 and t["core.neurons"] == 512
    assert t.figures["core.synmem_units"].confidence == "user" and str(p) in t.figures["core.synmem_units"].source
    assert t.figures["core.neurons"].source == "my measurement"
    assert t["chip.cores"] == 120  # inherited
    # a profile may build on another user profile, by path relative to itself
    q = write_profile(tmp_path / "smaller.toml", '[target]\nbase = "small.toml"\n[chip.cores]\nvalue = 4\n')
    t2 = load_target(q)
    assert t2["chip.cores"] == 4 and t2["core.synmem_units"] == 6000 and t2.name == "smaller"


@pytest.mark.parametrize("text, fragments", [
    ("[target]\nname = 'x'\n", ["missing figure", "[chip.cores]", 'base = "loihi2"']),
    ("[target]\nbase = 'loihi2'\n[core.neurons]\nvalue = -3\n", ["[core.neurons]", "-3", "at least 1"]),
    ("[target]\nbase = 'loihi2'\n[core.neurons]\nvalue = 1.5\n", ["[core.neurons]", "integer"]),
    ("[target]\nbase = 'loihi2'\n[core.neurons]\nvalue = 'many'\n", ["[core.neurons]", "'many'"]),
    ("[target]\nbase = 'loihi2'\n[core.neurons]\nconfidence = 'inferred'\n", ["[core.neurons]", "`value`"]),
    ("[target]\nbase = 'loihi2'\n[core.neurons]\nvalue = 9\nconfidence = 'guess'\n", ["confidence", "'guess'"]),
    ("[target]\nbase = 'loihi2'\n[core.nerons]\nvalue = 9\n", ["unknown figure [core.nerons]"]),
    ("[target]\nbase = 'loihi9'\n", ["loihi9", "no such file"]),
    ("[target\nname = 'x'\n", ["not a valid TOML profile"]),
    ("[target]\nbase = 'me.toml'\n", ["loop"]),
])
def test_malformed_profiles_give_one_line_errors(tmp_path, text, fragments):
    p = write_profile(tmp_path / "me.toml", text)
    with pytest.raises(TargetError) as info:
        load_target(p)
    msg = str(info.value)
    assert "\n" not in msg and ("me.toml" in msg or "loihi9" in msg), msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_unknown_target_name_lists_the_builtins():
    with pytest.raises(TargetError, match="unknown target 'loihi3'.*loihi1, loihi2"):
        load_target("loihi3")
