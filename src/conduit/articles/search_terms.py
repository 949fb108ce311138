"""The words a search finds articles by, so that publishing an article makes stale only the
cached searches it could appear in.

A search matches an article only if the article holds one of the search's words, as
PostgreSQL indexes them (lexemes: `dragons` and `dragon` are both `dragon` in English), unless
the search excludes a word (`-sea`), which any article without that word may match. So a new
article changes the results of the searches for its own lexemes and of those that exclude
words, and no other: each lexeme is a cache generation of its own (see `articles.service`).

Only PostgreSQL knows how it parses a search, with its dictionaries, so the route asks it
once per search text in each process (`parsed`) and `known` remembers the answer, which never
changes, for the reads answered before routing.
"""

import re
from collections import OrderedDict
from dataclasses import dataclass

# Lexemes in a tsquery's text are quoted, with quotes and backslashes within them doubled.
_QUOTED = re.compile(r"'((?:[^']|'')*)'")
# Search texts remembered per process; a forgotten one costs its next search one statement.
KNOWN_MAX = 10_000


@dataclass(frozen=True, slots=True)
class SearchTerms:
    """A search's lexemes, sorted, and whether it excludes any word."""

    lexemes: tuple[str, ...]
    excludes: bool


def parsed(tsquery: str) -> SearchTerms:
    """The terms of a search from PostgreSQL's text of its tsquery (`'sea' & !'serpent'`)."""
    lexemes = {match.replace("''", "'").replace("\\\\", "\\") for match in _QUOTED.findall(tsquery)}
    operators = _QUOTED.sub("", tsquery)
    return SearchTerms(tuple(sorted(lexemes)), excludes="!" in operators)


_known: OrderedDict[tuple[str, str], SearchTerms] = OrderedDict()


def known(language: str, text: str) -> SearchTerms | None:
    """The terms of the search `text` under the configuration `language`, if this process has
    parsed it."""
    terms = _known.get((language, text))
    if terms is not None:
        _known.move_to_end((language, text))
    return terms


def remember(language: str, text: str, terms: SearchTerms) -> None:
    _known[(language, text)] = terms
    _known.move_to_end((language, text))
    while len(_known) > KNOWN_MAX:
        _known.popitem(last=False)
