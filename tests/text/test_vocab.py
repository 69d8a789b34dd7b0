"""Class names, prompts and queries outside the aligned model's caption vocabulary are refused or warned about."""

import warnings

import numpy as np
import pytest
import torch

import dinolab
from dinolab.errors import ConfigError
from dinolab.text import (
    AlignedEmbeddings,
    AlignedModel,
    TextEncoder,
    VisionHead,
    WordTokenizer,
    text_search,
    zeroshot_classify,
)
from dinolab.text.vocab import UnknownWordsWarning, check_class_names, check_query

TOK = WordTokenizer.build(["a red circle", "a blue square", "a photo of a star"])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    bb = dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1)
    return AlignedModel(bb, VisionHead(192, 16, hidden_dim=32), TextEncoder(len(TOK), 16, width=32, depth=1), TOK,
                        image_size=16).eval()


def test_unknown_words_are_listed_once_in_order():
    assert TOK.unknown_words("A green star, a GREEN rocket!") == ["green", "rocket"]
    assert TOK.unknown_words("a red circle") == []


def test_class_names_without_a_known_word_are_refused():
    with pytest.raises(ConfigError, match=r"'rocket', 'coffee'.*same text embedding.*vocabulary: a, blue"):
        check_class_names(TOK, ["circle", "rocket", "coffee"])
    with pytest.raises(ConfigError, match="'red green' and 'red rocket' read the same"):
        check_class_names(TOK, ["red green", "red rocket"])  # both "red <unk>"


def test_partly_unknown_names_and_templates_warn():
    assert check_class_names(TOK, ["circle", "star"], ["a photo of a {}."]) == []
    msgs = check_class_names(TOK, ["green circle", "star"], ["a picture of a {}."])
    assert len(msgs) == 2
    assert "green (in \"green circle\")" in msgs[0] and "star" not in msgs[0]
    assert msgs[1].endswith("picture")


def test_zeroshot_refuses_before_embedding_and_warns(model):
    data = AlignedEmbeddings(["a", "b"], np.eye(2, 16, dtype=np.float32))
    with pytest.raises(ConfigError, match="'astronaut'"):
        zeroshot_classify(model, data, ["circle", "astronaut"])
    with pytest.warns(UnknownWordsWarning, match="green"):
        zeroshot_classify(model, data, ["circle", "green square"], templates=("a {}.",))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownWordsWarning)
        zeroshot_classify(model, data, ["circle", "square"], templates=("a photo of a {}.",))


def test_search_refuses_a_query_of_unknown_words_and_warns_on_some(model):
    data = AlignedEmbeddings(["a", "b"], np.eye(2, 16, dtype=np.float32))
    with pytest.raises(ConfigError, match="no word of the search text 'an astronaut'"):
        text_search(model, "an astronaut", data)
    with pytest.warns(UnknownWordsWarning, match="green"):
        assert len(text_search(model, "a green star", data)) == 2
    assert check_query(TOK, "a red star") == []
