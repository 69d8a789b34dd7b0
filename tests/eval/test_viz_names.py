"""Output names derived from input file names stay valid file names (found by the corpus' 240-character name:
``dinolab similarity`` wrote ``<stem>_point1_<ref stem>.png``, 500 bytes, and failed with ENAMETOOLONG)."""

import os

from dinolab.eval.viz import MAX_STEM_BYTES, unique_stems


def test_long_stems_are_shortened_with_a_hash_and_stay_distinct():
    a, b = "x" * 240 + "a.png", "x" * 240 + "b.png"
    stems = unique_stems([f"/d/{a}", f"/e/{b}", "/f/short.jpg", "/g/short.png"])
    assert all(len(os.fsencode(s)) <= MAX_STEM_BYTES for s in stems)
    assert len(set(stems)) == 4 and stems[2:] == ["short", "short_2"]
    assert stems[0].startswith("x" * 60) and stems[0] != stems[1]
    assert len(os.fsencode(f"{stems[0]}_point1_{stems[1]}.png")) < 255


def test_a_long_name_of_multibyte_characters_is_not_cut_inside_a_character():
    stem = unique_stems(["é" * 200 + ".png"])[0]
    assert len(os.fsencode(stem)) <= MAX_STEM_BYTES
    stem.encode("utf-8")  # no half character (a lone surrogate would raise)
