import json
import random

import pytest

from dinolab.errors import DinolabError
from dinolab.text.tokenizer import SPECIALS, WordTokenizer, words

CAPTIONS = ["a red star on a striped background", "an orange circle on a noisy background", "a red circle"]


def test_vocabulary_is_deterministic_and_ordered_by_count_then_name():
    tok = WordTokenizer.build(CAPTIONS)
    # counts: a 4, background 2, circle 2, on 2, red 2, then the singletons alphabetically
    assert tok.vocab == list(SPECIALS) + ["a", "background", "circle", "on", "red", "an", "noisy", "orange", "star",
                                          "striped"]
    shuffled = CAPTIONS[:]
    random.Random(1).shuffle(shuffled)
    assert WordTokenizer.build(shuffled).vocab == tok.vocab
    assert tok.context_length == 9  # longest caption (7 words) + <bos> + <eos>


def test_round_trip_normalises_case_and_punctuation():
    tok = WordTokenizer.build(CAPTIONS)
    ids = tok.encode("A RED star, on a Striped background!")
    assert ids.shape == (1, tok.context_length)
    assert ids[0, 0].item() == tok.bos_id and tok.eos_id in ids[0].tolist()
    assert tok.decode(ids[0]) == "a red star on a striped background"
    assert words("Hello, World_again 42") == ["hello", "world", "again", "42"]


def test_unknown_words_become_unk():
    tok = WordTokenizer.build(CAPTIONS)
    ids = tok.encode("a purple star", context_length=6)[0].tolist()
    a, star = tok.vocab.index("a"), tok.vocab.index("star")
    assert ids == [tok.bos_id, a, tok.unk_id, star, tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "a <unk> star"


def test_long_text_is_truncated_but_keeps_its_eos():
    tok = WordTokenizer.build(CAPTIONS)
    row = tok.encode(" ".join(["red"] * 20), context_length=5)[0].tolist()
    red = tok.vocab.index("red")
    assert row == [tok.bos_id, red, red, red, tok.eos_id]


def test_save_and_load(tmp_path):
    tok = WordTokenizer.build(CAPTIONS, context_length=12)
    path = tok.save(tmp_path / "tokenizer.json")
    again = WordTokenizer.load(path)
    assert again.vocab == tok.vocab and again.context_length == 12
    assert json.loads(path.read_text())["vocab"][:4] == list(SPECIALS)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(DinolabError, match="not a dinolab word tokenizer"):
        WordTokenizer.load(tmp_path / "bad.json")
    with pytest.raises(DinolabError, match="missing"):
        WordTokenizer.load(tmp_path / "absent.json")


def test_max_size_and_min_count():
    tok = WordTokenizer.build(CAPTIONS, min_count=2)
    assert tok.vocab[4:] == ["a", "background", "circle", "on", "red"]
    assert len(WordTokenizer.build(CAPTIONS, max_size=6)) == 6
