"""Reading a search's words out of PostgreSQL's text of its tsquery."""

import pytest

from conduit.articles import search_terms
from conduit.articles.search_terms import SearchTerms, parsed


@pytest.mark.parametrize(
    ("tsquery", "expected"),
    [
        # As PostgreSQL 15 prints websearch_to_tsquery('english', ...) of:
        # `sea serpent`
        ("'sea' & 'serpent'", SearchTerms(("sea", "serpent"), excludes=False)),
        # `"flying wyverns" or sea`
        ("'fli' <-> 'wyvern' | 'sea'", SearchTerms(("fli", "sea", "wyvern"), excludes=False)),
        # `foo-bar foo`: a hyphenated word is indexed whole and in parts
        ("'foo-bar' <-> 'foo' <-> 'bar' & 'foo'", SearchTerms(("bar", "foo", "foo-bar"), False)),
        # `serpent -sea`
        ("'serpent' & !'sea'", SearchTerms(("sea", "serpent"), excludes=True)),
        # `the and`: stop words only
        ("", SearchTerms((), excludes=False)),
        # Quotes and backslashes within a lexeme are doubled.
        ("'o''neil' & 'c\\\\d'", SearchTerms(("c\\d", "o'neil"), excludes=False)),
        # An exclamation mark within a lexeme is not an exclusion.
        ("'wow!' & 'x'", SearchTerms(("wow!", "x"), excludes=False)),
    ],
)
def test_reads_the_lexemes_and_whether_a_word_is_excluded(
    tsquery: str, expected: SearchTerms
) -> None:
    assert parsed(tsquery) == expected


def test_remembers_the_most_recent_searches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_terms, "KNOWN_MAX", 2)
    monkeypatch.setattr(search_terms, "_known", type(search_terms._known)())
    terms = SearchTerms(("x",), excludes=False)
    search_terms.remember("english", "a", terms)
    search_terms.remember("english", "b", terms)
    assert search_terms.known("english", "a") == terms  # now the most recent
    search_terms.remember("english", "c", terms)

    assert search_terms.known("english", "b") is None
    assert search_terms.known("english", "a") == terms
    assert search_terms.known("simple", "a") is None
