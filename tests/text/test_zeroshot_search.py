import numpy as np
import pytest
import torch

import dinolab
from dinolab.errors import ConfigError, DataError
from dinolab.eval.features import embed
from dinolab.text import (
    AlignedEmbeddings,
    AlignedModel,
    TextEncoder,
    VisionHead,
    WordTokenizer,
    class_embeddings,
    embed_images,
    load_embeddings,
    text_search,
    zeroshot_classify,
)
from dinolab.text.zeroshot import match_labels

SHAPES = "builtin:shapes?n=10&size=16"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    bb = dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1)
    tok = WordTokenizer.build(["a red circle", "a blue square", "a photo of a star"])
    return AlignedModel(bb, VisionHead(192, 16, hidden_dim=32), TextEncoder(len(tok), 16, width=32, depth=1), tok,
                        image_size=16).eval()


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_prompt_ensembling_is_the_normalised_mean_of_normalised_prompts(model):
    templates = ("a {}.", "a photo of a {}.")
    got = class_embeddings(model, ["circle", "red square"], templates).numpy()
    with torch.no_grad():
        expected = [unit(np.mean([unit(model.encode_text(t.format(c))[0].numpy()) for t in templates], axis=0))
                    for c in ["circle", "red square"]]
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="no '\\{\\}'"):
        class_embeddings(model, ["circle"], ("a photo",))


def test_zeroshot_on_given_embeddings_is_the_argmax_cosine(model):
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(7, 16))).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    data = AlignedEmbeddings([f"img{i}" for i in range(7)], emb, labels, ["circle", "square", "star"])
    res = zeroshot_classify(model, data, ["square", "circle"])  # 'star' is not among them
    text = class_embeddings(model, ["square", "circle"]).numpy()
    np.testing.assert_array_equal(res.predictions, (emb @ text.T).argmax(1))
    np.testing.assert_array_equal(res.labels, [1, 0, -1, 1, 0, -1, 1])
    known = res.labels >= 0
    assert res.accuracy == pytest.approx(float((res.predictions[known] == res.labels[known]).mean()))
    assert res.chance == 0.5
    with pytest.raises(ConfigError, match="at least two classes"):
        zeroshot_classify(model, data, ["circle"])


def test_labels_are_matched_by_name():
    got = match_labels(["Golden_Retriever", "cat", "dog"], np.array([0, 1, 2, 2]), ["dog", "golden retriever"])
    assert got.tolist() == [1, -1, 0, 0]
    assert match_labels(None, None, ["a", "b"]) is None


def test_search_ranks_by_cosine_and_keeps_ties_in_order(model):
    emb = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], np.float32)
    emb = np.pad(emb, ((0, 0), (0, 14)))
    data = AlignedEmbeddings(["a", "b", "c", "d"], emb)
    with torch.no_grad():
        q = model.encode_text("a red circle")[0].numpy()
    scores = emb @ q
    hits = text_search(model, "a red circle", data, top_k=10)
    assert len(hits) == 4 and [h.rank for h in hits] == [1, 2, 3, 4]
    expected = sorted(range(4), key=lambda i: (-scores[i], i))
    assert [h.index for h in hits] == expected
    assert [h.path for h in hits] == [data.paths[i] for i in expected]
    assert hits[0].score == pytest.approx(float(scores[expected[0]]), rel=1e-5)
    # "a" and "c" have the same embedding: "a" (earlier) ranks first.
    ranks = {h.path: h.rank for h in hits}
    assert ranks["a"] + 1 == ranks["c"]
    assert len(text_search(model, "a red circle", data, top_k=2)) == 2
    with pytest.raises(ConfigError, match="empty"):
        text_search(model, "  ", data)


def test_embeddings_from_images_from_saved_file_and_from_dinolab_embed_agree(model, tmp_path):
    direct = embed_images(model, SHAPES, device="cpu", precision="fp32", progress=False)
    assert direct.emb.shape == (10, 16) and direct.classes[0] == "circle"
    np.testing.assert_allclose(np.linalg.norm(direct.emb, axis=1), 1.0, rtol=1e-5)

    direct.save(tmp_path / "aligned.npz")
    again = load_embeddings(tmp_path / "aligned.npz", model)
    np.testing.assert_array_equal(again.emb, direct.emb)
    assert again.paths == direct.paths and again.labels.tolist() == direct.labels.tolist()

    backbone_emb = embed(model.backbone, SHAPES, image_size=16, device="cpu", precision="fp32", patch_mean=True,
                         progress=False)
    backbone_emb.save(tmp_path / "backbone.npz")
    via_head = load_embeddings(tmp_path / "backbone.npz", model)
    np.testing.assert_allclose(via_head.emb, direct.emb, rtol=1e-4, atol=1e-5)

    other = AlignedModel(model.backbone, VisionHead(192, 16, hidden_dim=32), model.text_encoder, model.tokenizer,
                         image_size=16)
    with pytest.raises(DataError, match="another aligned model"):
        load_embeddings(tmp_path / "aligned.npz", other)
    embed(model.backbone, SHAPES, image_size=16, device="cpu", progress=False).save(tmp_path / "cls_only.npz")
    with pytest.raises(DataError, match="--patch-mean"):
        load_embeddings(tmp_path / "cls_only.npz", model)
