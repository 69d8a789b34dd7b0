"""A deterministic word-level tokenizer built from training captions (nothing is downloaded).

Text is lower-cased and split into words (runs of letters and digits; punctuation is
dropped), so ``"A Red Star."`` and ``"a red star"`` give the same tokens. The vocabulary is
the four special tokens ``<pad>`` (id 0), ``<bos>`` (1), ``<eos>`` (2), ``<unk>`` (3), then the
caption words sorted by decreasing count and alphabetically within a count, so the same
captions always give the same ids. A word outside the vocabulary becomes ``<unk>``.

A sequence is ``<bos> w1 .. wk <eos>`` padded with ``<pad>`` to ``context_length``; a longer
text keeps its first ``context_length - 2`` words, so every row has exactly one ``<eos>``
(the text encoder pools there).

Examples:
    >>> tok = WordTokenizer.build(["a red star", "a blue circle"])
    >>> tok.encode("A blue star!", context_length=6).tolist()
    [[1, 4, 5, 8, 2, 0]]
    >>> tok.decode([1, 4, 5, 8, 2, 0]), tok.decode(tok.encode("a green star")[0])
    ('a blue star', 'a <unk> star')
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..errors import DinolabError
from ..io import atomic_save_text

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
FORMAT = "dinolab-word-tokenizer"
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (letters and digits; punctuation and ``_`` separate words)."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Lower-case word vocabulary with ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` (see the module doc).

    Attributes:
        vocab: token strings; a token's id is its position.
        context_length: default sequence length of :meth:`encode`.
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, vocab: Sequence[str], context_length: int = 32) -> None:
        if tuple(vocab[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {list(vocab[:4])}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("the vocabulary has repeated tokens")
        if context_length < 3:
            raise ValueError(f"context_length must be at least 3 (<bos> word <eos>), got {context_length}")
        self.vocab = list(vocab)
        self.context_length = context_length
        self._ids = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def build(cls, texts: Iterable[str], *, min_count: int = 1, max_size: int | None = None,
              context_length: int | None = None) -> WordTokenizer:
        """Vocabulary of the words of ``texts`` seen at least ``min_count`` times (at most ``max_size`` tokens
        in all). ``context_length`` defaults to the longest text + 2, at least 8."""
        counts: Counter[str] = Counter()
        longest = 0
        for t in texts:
            w = words(t)
            counts.update(w)
            longest = max(longest, len(w))
        kept = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + kept, context_length or max(8, longest + 2))

    def __len__(self) -> int:
        return len(self.vocab)

    def token_ids(self, text: str) -> list[int]:
        """Word ids of ``text`` without special tokens or padding."""
        return [self._ids.get(w, self.unk_id) for w in words(text)]

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` outside the vocabulary (each once, in order of appearance); they become ``<unk>``."""
        return list(dict.fromkeys(w for w in words(text) if w not in self._ids))

    def encode(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """``(B, L)`` long tensor of ``<bos> words <eos> <pad>...`` rows (``L = context_length``)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.pack([self.token_ids(t) for t in texts], context_length)

    def pack(self, rows: Sequence[Sequence[int]], context_length: int | None = None) -> torch.Tensor:
        """Word-id lists (from :meth:`token_ids`) -> ``(B, L)`` rows with ``<bos>``, ``<eos>`` and padding."""
        length = context_length or self.context_length
        out = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        for r, word_ids in enumerate(rows):
            ids = [self.bos_id] + list(word_ids)[: length - 2] + [self.eos_id]
            out[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The words of one row, without ``<bos>``/``<eos>``/``<pad>`` (``<unk>`` stays visible)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        skip = {self.pad_id, self.bos_id, self.eos_id}
        return " ".join(self.vocab[i] for i in ids if i not in skip)

    # ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "context_length": self.context_length, "vocab": self.vocab}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as JSON (atomically)."""
        atomic_save_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DinolabError(f"tokenizer file {path} is missing; an aligned model folder holds tokenizer.json "
                               f"next to aligned.json: copy the whole folder written by `dinolab align`") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DinolabError(f"{path} is not a readable tokenizer JSON ({e}); re-run `dinolab align`") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise DinolabError(f"{path} is not a dinolab word tokenizer (format {FORMAT!r} expected)")
        try:
            return cls(record["vocab"], int(record["context_length"]))
        except (KeyError, ValueError, TypeError) as e:
            raise DinolabError(f"{path}: damaged tokenizer ({e}); re-run `dinolab align`") from None
