"""The data set as streams of rows, built from the seed alone and never held whole in memory.

Each table's rows come from a generator with random streams of its own, so a table can be
produced again (the favorite counts stored on `article` are drawn again when the favorite rows
are written) and one table's size never shifts another's values. What several tables share is
kept in arrays of numbers, the "skeleton": every user's and article's creation time, and every
article's author.

The shapes are those of a social publishing site:

- Ids follow creation time, as the app's identity columns do: users and articles are created
  in id order over a window that ends at `until`, with activity growing over time.
- Popularity is heavy-tailed: whom people follow is Zipf-distributed over a random ranking of
  the users (a few accounts with very many followers, most with few), and so are authorship
  (among those registered when the article appears), who favorites and who comments. How many
  users each follows, and how many favorites and comments an article gets, are log-normal.
  The rankings are independent: a famous account need not write much, which keeps the feed
  rows near followers x articles per author on average.
- Tags have Zipf popularity over the vocabulary, 1 to 5 per article.
- Text is made of a built-in word list with Zipf word frequencies; bodies are assembled from a
  pool of generated sentences, which keeps a body at a few microseconds.
- Nothing happens before it could have: an article comes after its author's registration, a
  follow, favorite or comment after both sides exist, an update after the creation.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate

from conduit.articles import slugs
from conduit.platform.seed.words import (
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    TAG_TOPICS,
    WORDS,
)

SECONDS_PER_DAY = 86_400
# Activity grows over the window: the share of users (and articles) created by fraction x of
# it is x ** GROWTH.
GROWTH = 2.0
# Zipf exponents and offsets (Zipf-Mandelbrot: weight 1 / (rank + offset) ** exponent). The
# offset flattens the head: the most prolific author writes a few thousand of a million
# articles rather than a tenth of them.
FOLLOWEE_ZIPF = (1.0, 3.0)
AUTHOR_ZIPF = (1.0, 50.0)
ACTIVITY_ZIPF = (0.9, 10.0)
TAG_ZIPF = (1.1, 1.0)
WORD_ZIPF = (1.0, 2.0)
# Spread of the log-normal counts: most values near the mean's order, a long tail above it.
FOLLOWS_SIGMA = 1.2
FAVORITES_SIGMA = 1.5
COMMENTS_SIGMA = 1.3
BODYWORDS_MEDIAN = 160
BODYWORDS_SIGMA = 0.8
TAGS_PER_ARTICLE = (1, 2, 3, 4, 5)
TAGS_PER_ARTICLE_WEIGHTS = (20, 30, 25, 15, 10)
SENTENCE_POOL = 20_000
EDITED_SHARE = 0.2
BIO_SHARE = 0.6
IMAGE_SHARE = 0.4
# Slug suffixes: five characters from the id, then its last digit, so that a seeded suffix is
# never a word (titles hold words and numbers of at most four digits) and never repeats.
_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SUFFIX_SPACE = 36**5
_SUFFIX_MULTIPLIER = 48_271_001  # odd and not a multiple of 3: a bijection modulo 36 ** 5
_SUFFIX_STEP = 7_777_777


@dataclass(frozen=True, slots=True)
class Plan:
    """What to build. Counts per article and per user are means."""

    users: int
    articles: int
    follows_per_user: float
    favorites_per_article: float
    comments_per_article: float
    tags: int
    seed: int
    until: datetime
    days: float


@dataclass(frozen=True, slots=True)
class Start:
    """The first id of each table: 1 in an empty database, past the existing rows otherwise."""

    user: int = 1
    article: int = 1
    comment: int = 1
    tag: int = 1


@dataclass(slots=True)
class Taken:
    """Names already in the database (lower case), which new rows must not reuse."""

    usernames: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    slugs: set[str] = field(default_factory=set)
    tags: dict[str, int] = field(default_factory=dict)


def _rng(plan: Plan, stream: str) -> random.Random:
    # Reproducible on purpose: nothing here is a secret.
    return random.Random(f"{plan.seed}/{stream}")  # noqa: S311


def _zipf_cumulative(count: int, exponent: float, offset: float) -> list[float]:
    return list(accumulate(1.0 / (rank + offset) ** exponent for rank in range(1, count + 1)))


def _ranked_cumulative(
    rng: random.Random, count: int, exponent: float, offset: float
) -> list[float]:
    """Cumulative Zipf weights of `count` items in id order, each given a random rank."""
    ranks = list(range(1, count + 1))
    rng.shuffle(ranks)
    return list(accumulate(1.0 / (rank + offset) ** exponent for rank in ranks))


def _pick(rng: random.Random, cumulative: Sequence[float], upto: int | None = None) -> int:
    """An index by its weight, among the first `upto` (all by default)."""
    end = len(cumulative) if upto is None else upto
    return bisect_right(cumulative, rng.random() * cumulative[end - 1], 0, end - 1)


def _lognormal_count(rng: random.Random, mean: float, sigma: float, cap: int) -> int:
    if mean <= 0 or cap <= 0:
        return 0
    value = mean * rng.lognormvariate(-sigma * sigma / 2, sigma)
    # Rounded at random, so that small means keep their mean.
    return min(cap, int(value + rng.random()))


class PowerLaw:
    """Zipf-Mandelbrot popularity over `count` items, drawn in constant time through the
    inverse of its continuous approximation (no search through weights). The items are ranked
    at random by `rng`, or in their own order without it."""

    def __init__(
        self, rng: random.Random | None, count: int, exponent: float, offset: float
    ) -> None:
        self.count = count
        ranked = array("q", range(count))
        if rng is not None:
            rng.shuffle(ranked)
        self._ranked = ranked
        self._offset = offset
        self._exponent = exponent
        low, high = 1 + offset, count + 1 + offset
        if exponent == 1:
            self._low, self._span = low, math.log(high / low)
        else:
            power = 1 - exponent
            self._low, self._span = low**power, high**power - low**power
            self._inverse = 1 / power

    def draws(self, rng: random.Random, count: int) -> list[int]:
        ranked, offset, last, low, span = (
            self._ranked,
            self._offset,
            self.count - 1,
            self._low,
            self._span,
        )
        uniform = rng.random
        if self._exponent == 1:
            return [
                ranked[min(last, int(low * math.exp(uniform() * span) - offset) - 1)]
                for _ in range(count)
            ]
        inverse = self._inverse
        return [
            ranked[min(last, int((low + uniform() * span) ** inverse - offset) - 1)]
            for _ in range(count)
        ]

    def distinct(self, rng: random.Random, want: int, exclude: int = -1) -> list[int]:
        """`want` distinct items, never `exclude` (-1 for none), in increasing order; once the
        draws keep hitting the same popular few, the rest are filled uniformly."""
        population = self.count
        want = min(want, population - (0 <= exclude < population))
        chosen: set[int] = set()
        for _ in range(8):
            need = want - len(chosen)
            if need <= 0:
                break
            chosen.update(self.draws(rng, need))
            chosen.discard(exclude)
        if len(chosen) > want:
            chosen = set(sorted(chosen)[:want])
        if len(chosen) < want:
            rest = [index for index in range(population) if index not in chosen]
            rest = [index for index in rest if index != exclude]
            chosen.update(rng.sample(rest, want - len(chosen)))
        return sorted(chosen)


def _moment(rng: random.Random, after: float, until: float, skew: float) -> float:
    """A time between `after` and `until`, nearer `after` the larger `skew` is."""
    share: float = rng.random() ** skew
    return after + (until - after) * share


def to_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


# --- the skeleton -------------------------------------------------------------------------


@dataclass(slots=True)
class Skeleton:
    """What several tables need to agree on, as arrays of numbers."""

    until: float
    user_times: array[float]
    article_times: array[float]
    article_authors: array[int]  # index into the users, not the id

    @classmethod
    def build(cls, plan: Plan) -> Skeleton:
        until = plan.until.timestamp()
        start = until - plan.days * SECONDS_PER_DAY
        user_times = _growing_times(_rng(plan, "user-times"), plan.users, start, until)
        # Articles begin once the first user has registered, so each has a possible author.
        first = user_times[0] if user_times else start
        article_times = _growing_times(_rng(plan, "article-times"), plan.articles, first, until)
        rng = _rng(plan, "authors")
        cumulative = _ranked_cumulative(rng, plan.users, *AUTHOR_ZIPF)
        authors = array("q")
        for created in article_times:
            # Only those registered by then can write it.
            authors.append(_pick(rng, cumulative, bisect_right(user_times, created)))
        return cls(until, user_times, article_times, authors)


def _growing_times(rng: random.Random, count: int, start: float, until: float) -> array[float]:
    """`count` increasing times in [start, until), denser towards the end: one in each of
    `count` equal slices of the growth curve, at a random place in it."""
    span = until - start
    times = array("d")
    previous = start
    for index in range(count):
        share = (index + rng.random()) / count
        moment = start + span * share ** (1 / GROWTH)
        # Strictly increasing, so that the order by (created_at, id) is the order by id.
        previous = max(moment, previous + 1e-6)
        times.append(previous)
    return times


# --- text ---------------------------------------------------------------------------------


class Text:
    """Titles, sentences and bodies from the word list."""

    def __init__(self, plan: Plan) -> None:
        rng = _rng(plan, "sentences")
        self._cumulative = _zipf_cumulative(len(WORDS), *WORD_ZIPF)
        self._rng = rng
        self.sentences = [self.sentence(rng, rng.randint(5, 24)) for _ in range(SENTENCE_POOL)]

    def words(self, rng: random.Random, count: int) -> list[str]:
        return rng.choices(WORDS, cum_weights=self._cumulative, k=count)

    def sentence(self, rng: random.Random, count: int) -> str:
        words = self.words(rng, count)
        if count > 8 and rng.random() < 0.4:
            words[rng.randrange(2, count - 2)] += ","
        text = " ".join(words)
        return text[0].upper() + text[1:] + ("?" if rng.random() < 0.08 else ".")

    def title(self, rng: random.Random) -> str:
        count = min(12, max(2, round(rng.gauss(6.5, 2.2))))
        words = self.words(rng, count)
        if rng.random() < 0.15:
            words.insert(0, str(rng.choice((3, 5, 7, 10, 12, 20, 100, 2026))))
        if rng.random() < 0.3:
            words = [word.capitalize() for word in words]
        else:
            words[0] = words[0].capitalize()
        title = " ".join(words)
        return title + "?" if rng.random() < 0.1 else title

    def body(self, rng: random.Random) -> str:
        wanted = max(12, int(rng.lognormvariate(math.log(BODYWORDS_MEDIAN), BODYWORDS_SIGMA)))
        paragraphs: list[str] = []
        written = 0
        while written < wanted:
            roll = rng.random()
            if paragraphs and roll < 0.1:
                paragraphs.append("## " + self.title(rng))
                continue
            if paragraphs and roll < 0.18:
                items = rng.choices(self.sentences, k=rng.randint(2, 5))
                paragraphs.append("\n".join(f"- {item}" for item in items))
                written += 12 * len(items)
                continue
            sentences = rng.choices(self.sentences, k=rng.randint(2, 7))
            paragraphs.append(" ".join(sentences))
            written += 14 * len(sentences)
        return "\n\n".join(paragraphs)


def slug_base(title: str) -> str:
    """`slugs.base_slug` for the titles made here (words, numbers, a final question mark),
    without the general-purpose transliteration that would dominate the run time."""
    base = title.rstrip("?").lower().replace(" ", "-").replace(",", "")
    if len(base) > slugs.BASE_MAX_LENGTH:
        return slugs.base_slug(title)
    return base


def slug_suffix(article_id: int, attempt: int = 0) -> str:
    value = ((article_id // 10) * _SUFFIX_MULTIPLIER + attempt * _SUFFIX_STEP) % _SUFFIX_SPACE
    letters = []
    for _ in range(5):
        value, digit = divmod(value, 36)
        letters.append(_SUFFIX_ALPHABET[digit])
    return "".join(letters) + str(article_id % 10)


def unique_slug(title: str, article_id: int, taken: set[str]) -> str:
    """The app's slug for the title: the plain one the first time, a suffixed one after."""
    base = slug_base(title)
    if base not in slugs.RESERVED and base not in taken:
        taken.add(base)
        return base
    attempt = 0
    while (slug := f"{base}-{slug_suffix(article_id, attempt)}") in taken:
        attempt += 1
    return slug


# --- rows ---------------------------------------------------------------------------------

UserRow = tuple[int, str, str, str, str, str | None, datetime, datetime]
TagRow = tuple[int, str]
ArticleRow = tuple[int, str, str, str, str, int, int, datetime, datetime]
PairRow = tuple[int, int]
DatedPairRow = tuple[int, int, datetime]
CommentRow = tuple[int, str, int, int, datetime, datetime]

USER_COLUMNS = (
    "id",
    "username",
    "email",
    "password_hash",
    "bio",
    "image",
    "created_at",
    "updated_at",
)
TAG_COLUMNS = ("id", "name")
ARTICLE_COLUMNS = (
    "id",
    "slug",
    "title",
    "description",
    "body",
    "author_id",
    "favorites_count",
    "created_at",
    "updated_at",
)
ARTICLE_TAG_COLUMNS = ("article_id", "tag_id", "article_created_at")
FOLLOW_COLUMNS = ("follower_id", "followee_id", "created_at")
FAVORITE_COLUMNS = ("user_id", "article_id", "created_at")
COMMENT_COLUMNS = ("id", "body", "article_id", "author_id", "created_at", "updated_at")


def _updated(rng: random.Random, created: float, until: float) -> float:
    if rng.random() >= EDITED_SHARE:
        return created
    return _moment(rng, created, until, 3.0)


def users(
    plan: Plan, skeleton: Skeleton, start: Start, taken: Taken, password_hash: str
) -> Iterator[UserRow]:
    rng = _rng(plan, "users")
    text = Text(plan)
    counters: dict[str, int] = {}
    for index, created in enumerate(skeleton.user_times):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        style = rng.random()
        if style < 0.35:
            base = f"{first}.{last}"
        elif style < 0.55:
            base = f"{first}_{last}"
        elif style < 0.75:
            base = f"{first}{last}"
        elif style < 0.9:
            base = f"{first[0]}{last}"
        else:
            base = first
        domain = rng.choice(EMAIL_DOMAINS)
        # Names are letters only, so `base` plus a number can never be another base.
        while True:
            seen = counters.get(base, 0)
            counters[base] = seen + 1
            username = base if seen == 0 else f"{base}{seen + 1}"
            email = f"{username}@{domain}"
            if username not in taken.usernames and email not in taken.emails:
                break
        bio = text.sentence(rng, rng.randint(4, 16)) if rng.random() < BIO_SHARE else ""
        image = (
            f"https://avatars.example.com/{username}.jpg" if rng.random() < IMAGE_SHARE else None
        )
        yield (
            start.user + index,
            username,
            email,
            password_hash,
            bio,
            image,
            to_datetime(created),
            to_datetime(_updated(rng, created, skeleton.until)),
        )


def tag_names(count: int) -> list[str]:
    """The vocabulary, most popular first: the topics, then pairs of them."""
    names = TAG_TOPICS[:count]
    for first in TAG_TOPICS:
        for second in TAG_TOPICS:
            if len(names) >= count:
                return names
            if first != second:
                names.append(f"{first}-{second}")
    index = 0
    while len(names) < count:
        index += 1
        names.append(f"topic-{index}")
    return names


def tag_ids(plan: Plan, start: Start, taken: Taken) -> tuple[list[int], list[TagRow]]:
    """The id of each tag of the vocabulary (existing tags keep theirs), and the new rows."""
    ids: list[int] = []
    new: list[TagRow] = []
    for name in tag_names(plan.tags):
        existing = taken.tags.get(name)
        if existing is None:
            existing = start.tag + len(new)
            new.append((existing, name))
        ids.append(existing)
    return ids, new


def _favorite_counts(plan: Plan) -> Iterator[int]:
    """How many favorites each article gets, drawn the same way for the article's counter and
    for its favorite rows."""
    rng = _rng(plan, "favorite-counts")
    for _ in range(plan.articles):
        yield _lognormal_count(rng, plan.favorites_per_article, FAVORITES_SIGMA, plan.users - 1)


def _article_tags(plan: Plan, tags: Sequence[int]) -> Iterator[list[int]]:
    rng = _rng(plan, "article-tags")
    if not tags:
        yield from ([] for _ in range(plan.articles))
        return
    # The vocabulary is in order of popularity already.
    popularity = PowerLaw(None, len(tags), *TAG_ZIPF)
    for _ in range(plan.articles):
        (count,) = rng.choices(TAGS_PER_ARTICLE, weights=TAGS_PER_ARTICLE_WEIGHTS)
        yield [tags[index] for index in popularity.distinct(rng, count)]


def articles(plan: Plan, skeleton: Skeleton, start: Start, taken: Taken) -> Iterator[ArticleRow]:
    rng = _rng(plan, "articles")
    text = Text(plan)
    for index, (created, author, favorites) in enumerate(
        zip(skeleton.article_times, skeleton.article_authors, _favorite_counts(plan), strict=True)
    ):
        article_id = start.article + index
        title = text.title(rng)
        yield (
            article_id,
            unique_slug(title, article_id, taken.slugs),
            title,
            text.sentence(rng, rng.randint(6, 28)),
            text.body(rng),
            start.user + author,
            favorites,
            to_datetime(created),
            to_datetime(_updated(rng, created, skeleton.until)),
        )


def article_tags(
    plan: Plan, skeleton: Skeleton, start: Start, tags: Sequence[int]
) -> Iterator[DatedPairRow]:
    """Each article's tags, with the article's creation time that orders a tag's page (given
    here, so that the table's trigger need not look each one up)."""
    chosen_tags = _article_tags(plan, tags)
    for index, (created, chosen) in enumerate(
        zip(skeleton.article_times, chosen_tags, strict=True)
    ):
        for tag_id in chosen:
            yield (start.article + index, tag_id, to_datetime(created))


def follows(plan: Plan, skeleton: Skeleton, start: Start) -> Iterator[DatedPairRow]:
    """Each user's follows, in primary-key order (follower, then followee)."""
    rng = _rng(plan, "follows")
    popularity = PowerLaw(rng, plan.users, *FOLLOWEE_ZIPF)
    times = skeleton.user_times
    for follower in range(plan.users):
        count = _lognormal_count(rng, plan.follows_per_user, FOLLOWS_SIGMA, plan.users - 1)
        if count == 0:
            continue
        for followee in popularity.distinct(rng, count, follower):
            after = max(times[follower], times[followee])
            yield (
                start.user + follower,
                start.user + followee,
                to_datetime(_moment(rng, after, skeleton.until, 2.0)),
            )


def favorites(plan: Plan, skeleton: Skeleton, start: Start) -> Iterator[DatedPairRow]:
    """Each article's favorites, as many as its `favorites_count`; never by its author."""
    rng = _rng(plan, "favorites")
    activity = PowerLaw(rng, plan.users, *ACTIVITY_ZIPF)
    times = skeleton.user_times
    for index, count in enumerate(_favorite_counts(plan)):
        if count == 0:
            continue
        created = skeleton.article_times[index]
        author = skeleton.article_authors[index]
        for user in activity.distinct(rng, count, author):
            after = max(created, times[user])
            yield (
                start.user + user,
                start.article + index,
                to_datetime(_moment(rng, after, skeleton.until, 3.0)),
            )


def comments(plan: Plan, skeleton: Skeleton, start: Start) -> Iterator[CommentRow]:
    rng = _rng(plan, "comments")
    activity = PowerLaw(rng, plan.users, *ACTIVITY_ZIPF)
    text = Text(plan)
    times = skeleton.user_times
    comment_id = start.comment
    for index, created in enumerate(skeleton.article_times):
        count = _lognormal_count(rng, plan.comments_per_article, COMMENTS_SIGMA, 100_000)
        for author in activity.draws(rng, count):
            moment = _moment(rng, max(created, times[author]), skeleton.until, 3.0)
            body = " ".join(rng.choices(text.sentences, k=rng.randint(1, 4)))
            stamp = to_datetime(moment)
            yield (comment_id, body, start.article + index, start.user + author, stamp, stamp)
            comment_id += 1
