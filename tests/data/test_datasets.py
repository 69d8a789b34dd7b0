from pathlib import Path

import numpy as np
import pytest

from dinolab.data import ImageDataset, UnreadableImage
from dinolab.errors import DataError


def test_flat_folder_is_recursive_sorted_and_unlabelled(make_image, tmp_path):
    root = tmp_path / "imgs"
    for rel in ["b.png", "a.JPG", "sub/deeper/c.png", "sub/a.webp", ".hidden.png", ".cache/x.png", "notes.txt"]:
        p = root / rel
        if rel.endswith(".txt"):
            p.write_text("x")
        else:
            make_image(p, (8, 6))
    ds = ImageDataset(root)
    rel = [Path(p).relative_to(root).as_posix() for p in ds.paths]
    assert rel == ["a.JPG", "b.png", "sub/a.webp", "sub/deeper/c.png"]
    assert ds.labels is None and ds.classes is None
    assert ds.load(3).shape == (3, 6, 8)


def test_class_per_subfolder(image_folder):
    root = image_folder(classes=("dog", "cat", "bird"), per_class=2)
    ds = ImageDataset(root)
    assert ds.classes == ["bird", "cat", "dog"]
    assert ds.labels.dtype == np.int64
    for p, y in zip(ds.paths, ds.labels):
        assert Path(p).parent.name == ds.classes[y]
    assert list(ds.labels) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("extra", ["top.png", "cat/nested/deep.png"])
def test_mixed_layout_has_no_labels(image_folder, make_image, extra):
    root = image_folder(classes=("cat", "dog"), per_class=1)
    make_image(root / extra, (8, 8))
    ds = ImageDataset(root)
    assert len(ds) == 3 and ds.labels is None
    with pytest.raises(DataError, match="subfolder"):
        ImageDataset(root, labels=True)


def test_single_subfolder_is_not_a_class_layout(image_folder):
    ds = ImageDataset(image_folder(classes=("only",), per_class=2))
    assert ds.labels is None


def test_labels_false_ignores_classes(image_folder):
    assert ImageDataset(image_folder(), labels=False).labels is None


def test_file_list_relative_to_list_folder_and_to_root(make_image, tmp_path):
    make_image(tmp_path / "data" / "x" / "a.png", (5, 4))
    make_image(tmp_path / "data" / "b.png", (5, 4))
    lst = tmp_path / "data" / "list.txt"
    lst.write_text("# my images\nx/a.png\n\n  b.png  \n")
    ds = ImageDataset(lst)
    assert ds.paths == [str(tmp_path / "data" / "x" / "a.png"), str(tmp_path / "data" / "b.png")]
    assert ds.load(0).shape == (3, 4, 5)

    other = tmp_path / "lists" / "l.txt"
    other.parent.mkdir()
    other.write_text("x/a.png\nx/../b.png\n")
    ds = ImageDataset(other, root=tmp_path / "data")
    assert ds.paths == [str(tmp_path / "data" / "x" / "a.png"), str(tmp_path / "data" / "x" / ".." / "b.png")]
    assert ds.load(1).shape == (3, 4, 5)


@pytest.mark.parametrize("entry", ["../secret.png", "x/../../secret.png", "/etc/passwd", ".."])
def test_file_list_cannot_escape_root(tmp_path, entry):
    lst = tmp_path / "l.txt"
    lst.write_text(f"ok.png\n{entry}\n")
    with pytest.raises(DataError) as e:
        ImageDataset(lst, root=tmp_path / "root")
    msg = str(e.value)
    assert "line 2" in msg and entry in msg and "outside the root" in msg


def test_file_list_absolute_paths_allowed_without_root(make_image, tmp_path):
    p = make_image(tmp_path / "abs.png", (3, 3))
    (tmp_path / "l.txt").write_text(f"{p}\n")
    assert ImageDataset(tmp_path / "l.txt").paths == [str(p)]


def test_missing_files_in_a_list_fail_at_load_not_at_listing(tmp_path):
    (tmp_path / "l.txt").write_text("gone.png\n")
    ds = ImageDataset(tmp_path / "l.txt")
    with pytest.raises(UnreadableImage, match="file not found"):
        ds.load(0)


def test_single_image_file_and_list_of_paths(make_image, tmp_path):
    p = make_image(tmp_path / "one.jpg", (6, 6))
    assert ImageDataset(p).paths == [str(p)]
    assert ImageDataset([p, str(p)]).paths == [str(p)] * 2


def test_missing_and_empty_sources_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError) as e:
        ImageDataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value) and "does not exist" in str(e.value)
    assert "builtin:" in str(e.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="no images found under .*empty"):
        ImageDataset(tmp_path / "empty")
    (tmp_path / "blank.txt").write_text("\n# nothing\n")
    with pytest.raises(DataError, match="lists no images"):
        ImageDataset(tmp_path / "blank.txt")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="neither an image"):
        ImageDataset(tmp_path / "data.csv")
    with pytest.raises(DataError, match="empty"):
        ImageDataset([])


def test_custom_extensions(make_image, tmp_path):
    make_image(tmp_path / "a.png", (4, 4))
    make_image(tmp_path / "b.bmp", (4, 4))
    assert [Path(p).name for p in ImageDataset(tmp_path, extensions=["bmp"]).paths] == ["b.bmp"]


def test_folder_datasets_have_no_masks(image_folder):
    ds = ImageDataset(image_folder())
    assert not ds.has_masks and ds.masks(0) is None and ds.captions is None


def test_symlink_loops_are_read_once_and_named(make_image, tmp_path, caplog):
    # issue 22: `sub/up -> ..` twice made os.walk(followlinks=True) run forever
    make_image(tmp_path / "L" / "a.png")
    make_image(tmp_path / "L" / "sub" / "b.png")
    (tmp_path / "L" / "sub" / "up").symlink_to("..")
    (tmp_path / "L" / "sub" / "up2").symlink_to("..")
    with caplog.at_level("WARNING", logger="dinolab.data"):
        ds = ImageDataset(tmp_path / "L")
    assert sorted(Path(p).relative_to(tmp_path / "L").as_posix() for p in ds.paths) == ["a.png", "sub/b.png"]
    assert "up" in caplog.text and "already read" in caplog.text


def test_linked_folder_outside_the_tree_is_followed_once(make_image, tmp_path):
    make_image(tmp_path / "elsewhere" / "c.png")
    make_image(tmp_path / "data" / "a.png")
    (tmp_path / "data" / "link1").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "data" / "link2").symlink_to(tmp_path / "elsewhere")  # a second path to the same folder
    ds = ImageDataset(tmp_path / "data")
    assert [Path(p).name for p in ds.paths] == ["a.png", "c.png"]
    assert Path(ds.paths[1]).parent.name == "link1"
