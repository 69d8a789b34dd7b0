"""Check class names, prompts and queries against an aligned model's caption vocabulary.

The word tokenizer of ``dinolab align`` knows only the words of the captions it was trained
on; any other word becomes ``<unk>``. A class name none of whose words are known gets the
same prompts as every other such class (``"a photo of a <unk>."``), hence the same text
embedding, and zero-shot classification silently predicts one class for everything. These
checks refuse that case and warn (:class:`UnknownWordsWarning`) when only some words are
unknown.

Examples:
    >>> from dinolab.text import WordTokenizer
    >>> tok = WordTokenizer.build(["a photo of a red star", "a blue circle"])
    >>> check_class_names(tok, ["red star", "rocket"])                         # doctest: +ELLIPSIS
    Traceback (most recent call last):
    dinolab.errors.ConfigError: class name 'rocket' has no word the aligned model knows...
    >>> check_class_names(tok, ["star", "green circle"])
    ['class names use words the aligned model never saw in its captions (each reads as <unk>): green (in "green circle")']
"""

from __future__ import annotations

import warnings
from typing import Sequence

from ..errors import ConfigError
from .tokenizer import WordTokenizer, words

_REMEDY = ("zero-shot here works only with words from the captions `dinolab align` was trained on: "
           "name the classes with those words, or re-run `dinolab align` on captions that use these names")


class UnknownWordsWarning(UserWarning):
    """Some words of a class name, prompt template or query are outside the aligned model's vocabulary."""


def _vocab_hint(tok: WordTokenizer, n: int = 12) -> str:
    known = tok.vocab[4:]
    more = f", ... ({len(known)} words in all)" if len(known) > n else ""
    return f"its vocabulary: {', '.join(known[:n])}{more}"


def check_class_names(tok: WordTokenizer, classes: Sequence[str], templates: Sequence[str] = ()) -> list[str]:
    """Warnings about words of ``classes`` / ``templates`` unknown to ``tok`` (empty list: all known).

    Raises:
        ConfigError: a class name has no known word, or two class names read the same to the tokenizer
            (their prompts, hence their text embeddings, would be identical).
    """
    hopeless = [c for c in classes if len(tok.unknown_words(c)) == len(set(words(c)))]  # also a name of no words
    if hopeless:
        names = ", ".join(repr(c) for c in hopeless)
        raise ConfigError(f"class name{'s' if len(hopeless) > 1 else ''} {names} ha{'ve' if len(hopeless) > 1 else 's'}"
                          f" no word the aligned model knows, so {'they' if len(hopeless) > 1 else 'it'} would get "
                          f"the same text embedding as any other unknown name ({_vocab_hint(tok)}); {_REMEDY}")
    seen: dict[tuple[int, ...], str] = {}
    for c in classes:
        key = tuple(tok.token_ids(c))
        if key in seen:
            raise ConfigError(f"class names {seen[key]!r} and {c!r} read the same to the aligned model "
                              f"({tok.decode(list(key))!r}), so they would get the same text embedding; {_REMEDY}")
        seen[key] = c
    messages = []
    unknown = {c: tok.unknown_words(c) for c in classes}
    if any(unknown.values()):
        listed = "; ".join(f"{', '.join(u)} (in \"{c}\")" for c, u in unknown.items() if u)
        messages.append(f"class names use words the aligned model never saw in its captions (each reads as <unk>): "
                        f"{listed}")
    t_unknown = list(dict.fromkeys(w for t in templates for w in tok.unknown_words(t.replace("{}", " "))))
    if t_unknown:
        messages.append(f"prompt templates use words the aligned model never saw (each reads as <unk>): "
                        f"{', '.join(t_unknown)}")
    return messages


def check_query(tok: WordTokenizer, query: str) -> list[str]:
    """Warnings about words of a search ``query`` unknown to ``tok``; raises ConfigError when none is known."""
    unknown = tok.unknown_words(query)
    if unknown and len(unknown) == len(set(words(query))):
        raise ConfigError(f"no word of the search text {query!r} is known to the aligned model, so it would match "
                          f"images at random ({_vocab_hint(tok)}); search with words from the captions "
                          f"`dinolab align` was trained on")
    if unknown:
        return [f"the search text uses words the aligned model never saw in its captions (ignored as <unk>): "
                f"{', '.join(unknown)}"]
    return []


def warn_all(messages: Sequence[str]) -> None:
    """Issue each message as an :class:`UnknownWordsWarning`."""
    for m in messages:
        warnings.warn(m, UnknownWordsWarning, stacklevel=3)
