"""Article slugs: readable, unique, and permanent.

A slug is made once from the title when the article is created and never changes afterwards,
so links keep working after an edit. The first article with a title gets the plain slug
(`how-to-train-your-dragon`); later ones with the same title get a random suffix
(`how-to-train-your-dragon-x7k2qd`).
"""

import secrets
import string

from slugify import slugify

BASE_MAX_LENGTH = 100
SUFFIX_LENGTH = 6
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
# Slugs that would be shadowed by fixed routes under /articles/.
RESERVED = frozenset({"feed"})


def base_slug(title: str) -> str:
    return slugify(title, max_length=BASE_MAX_LENGTH, word_boundary=True) or "article"


def with_suffix(base: str) -> str:
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
    return f"{base}-{suffix}"
