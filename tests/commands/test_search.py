import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.text import align, load_aligned, text_search

DATA = "builtin:shapes?n=12&size=16"


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    backbone = dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1)
    align(backbone, DATA, out=root / "aligned", epochs=1, batch_size=6, image_size=16, embed_dim=16, text_width=32,
          text_depth=1, device="cpu", precision="fp32", progress=False)
    return root / "aligned"


def parse(printed):
    return [line.split("\t") for line in printed.strip().splitlines()]


def test_search_prints_ranked_paths_and_reuses_saved_embeddings(aligned, tmp_path, capsys):
    emb = tmp_path / "emb.npz"
    args = ["search", DATA, "--aligned", str(aligned), "--text", "a red star", "--top-k", "4", "--device", "cpu",
            "--precision", "fp32", "--num-workers", "0", "--save-embeddings", str(emb)]
    assert main(args) == 0
    lines = parse(capsys.readouterr().out)
    assert [int(r) for r, _, _ in lines] == [1, 2, 3, 4]
    scores = [float(s) for _, s, _ in lines]
    assert scores == sorted(scores, reverse=True)
    expected = text_search(load_aligned(aligned), "a red star", DATA, top_k=4, device="cpu", precision="fp32",
                           progress=False)
    assert [p for _, _, p in lines] == [h.path for h in expected]

    assert main(["search", str(emb), "--aligned", str(aligned), "--text", "a red star", "--top-k", "4"]) == 0
    assert parse(capsys.readouterr().out) == lines
    assert main(args) == 2 and "already exists" in capsys.readouterr().err  # --save-embeddings needs --force
    assert main(args + ["--force"]) == 0


def test_search_errors(aligned, tmp_path, capsys):
    assert main(["search", DATA, "--aligned", str(aligned), "--text", " "]) == 2
    assert "empty" in capsys.readouterr().err
    (tmp_path / "x.npz").write_bytes(b"junk")
    assert main(["search", str(tmp_path / "x.npz"), "--aligned", str(aligned), "--text", "a star"]) == 2
    assert "not a readable .npz" in capsys.readouterr().err


def test_search_refuses_unknown_words_and_warns_on_some(aligned, capsys):
    assert main(["search", DATA, "--aligned", str(aligned), "--text", "astronaut"]) == 2
    assert "no word of the search text" in capsys.readouterr().err
    assert main(["search", DATA, "--aligned", str(aligned), "--text", "a shiny star", "--top-k", "2",
                 "--device", "cpu", "--num-workers", "0"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "shiny" in captured.err and len(parse(captured.out)) == 2
