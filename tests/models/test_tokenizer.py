"""spikecc.models.tokenizer: character vocabularies and Hugging Face tokenizer.json files behind one interface.

The BPE tokenizer is trained in the test (conftest `train_bpe`) on a slice of the offline Shakespeare corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikecc.errors import InputFileError
from spikecc.models.tokenizer import (
    CharTokenizer,
    HFTokenizer,
    find_tokenizer,
    from_metadata,
    load_tokenizer,
    require_tokenizer,
)


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory, train_bpe) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe().save(str(path))
    return path


def test_characters_round_trip_and_name_what_they_cannot_encode():
    tok = CharTokenizer("ab c")
    assert tok.size == 4 and tok.encode("a cab") == [0, 2, 3, 0, 1] and tok.decode([3, 0, 1]) == "cab"
    with pytest.raises(InputFileError, match=r"\['X', 'Z'\].*vocabulary of 4"):
        tok.encode("aXZ")
    assert isinstance(from_metadata(tok.to_metadata()), CharTokenizer)
    assert from_metadata(tok.to_metadata()).chars == "ab c"
    with pytest.raises(InputFileError, match="4 characters but the model 5"):
        tok.check_model(5, "m.pt")


def test_bpe_tokenizer_file_encodes_decodes_and_travels_in_metadata(bpe_file):
    tok = load_tokenizer(bpe_file)
    assert isinstance(tok, HFTokenizer) and tok.size == 400
    text = "ROMEO. What light through yonder window breaks?\n"
    ids = tok.encode(text)
    assert len(ids) < len(text) * 0.75  # merges: fewer tokens than characters
    assert tok.decode(ids) == text
    again = from_metadata(tok.to_metadata())
    assert again.encode(text) == ids and again.size == 400
    assert tok.decode([tok.token_id("<|endoftext|>"), *ids[:2]]) == tok.decode(ids[:2])  # special tokens skipped
    tok.check_model(500, "m.pt")  # a model may have more embedding rows than the tokenizer has tokens
    with pytest.raises(InputFileError, match="400 tokens but the model's vocabulary has 300"):
        tok.check_model(300, "m.pt")


def test_load_tokenizer_tells_the_formats_apart_and_rejects_others(tmp_path, bpe_file):
    chars = tmp_path / "m.vocab.json"
    chars.write_text(json.dumps({"chars": "xyz"}))
    assert isinstance(load_tokenizer(chars), CharTokenizer)
    for body, fragment in [("{}", "neither"), ("not json", "not a JSON tokenizer file"),
                           ('{"model": {"type": "Nonsense"}}', "not a Hugging Face tokenizer.json")]:
        bad = tmp_path / "bad.json"
        bad.write_text(body)
        with pytest.raises(InputFileError, match=fragment) as info:
            load_tokenizer(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputFileError, match="no such tokenizer file"):
        load_tokenizer(tmp_path / "missing.json")


def test_find_tokenizer_beside_a_checkpoint(tmp_path, bpe_file):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"")
    assert find_tokenizer(ckpt) is None
    (tmp_path / "tokenizer.json").write_text(bpe_file.read_text())
    assert find_tokenizer(ckpt) == tmp_path / "tokenizer.json"
    (tmp_path / "model.tokenizer.json").write_text(bpe_file.read_text())
    assert find_tokenizer(ckpt) == tmp_path / "model.tokenizer.json"  # the checkpoint's own name first
    assert find_tokenizer(tmp_path) == tmp_path / "tokenizer.json"  # a save_pretrained directory: inside it


def test_a_graph_without_tokenizer_says_how_to_give_one():
    with pytest.raises(InputFileError, match="--tokenizer FILE"):
        require_tokenizer({"family": "spikegpt"}, "this graph")
