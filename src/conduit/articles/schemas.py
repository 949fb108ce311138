from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from conduit.articles.models import TAG_MAX_LENGTH
from conduit.platform.schemas import InputModel, Storable, Timestamp, WireModel
from conduit.profiles.schemas import ProfileRead

TITLE_MAX_LENGTH = 255
DESCRIPTION_MAX_LENGTH = 1_000
BODY_MAX_LENGTH = 100_000
MAX_TAGS = 20

Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX_LENGTH),
    Storable,
]
Description = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=DESCRIPTION_MAX_LENGTH),
    Storable,
]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("can't be blank")
    return value


# Not stripped, as Markdown indentation matters; whitespace alone is still blank.
Body = Annotated[
    str,
    StringConstraints(min_length=1, max_length=BODY_MAX_LENGTH),
    AfterValidator(_not_blank),
    Storable,
]
Tag = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TAG_MAX_LENGTH), Storable
]


def _distinct_tags(tags: list[str]) -> list[str]:
    distinct = list(dict.fromkeys(tags))
    if len(distinct) > MAX_TAGS:
        raise ValueError(f"has too many items (maximum is {MAX_TAGS})")
    return distinct


# The bound on the raw list only keeps absurd payloads from being validated item by item.
TagList = Annotated[list[Tag], Field(max_length=10 * MAX_TAGS), AfterValidator(_distinct_tags)]


class NewArticle(InputModel):
    title: Title
    description: Description
    body: Body
    tag_list: TagList = Field(default_factory=list)


class UpdateArticle(InputModel):
    """Only the fields present change; `null` means unchanged. `tagList` is an extension that
    the RealWorld editors send when saving an edit."""

    title: Title | None = None
    description: Description | None = None
    body: Body | None = None
    tag_list: TagList | None = None


class NewArticleEnvelope(InputModel):
    article: NewArticle


class UpdateArticleEnvelope(InputModel):
    article: UpdateArticle


class ArticleSummary(WireModel):
    """An article as lists show it: everything but the body."""

    slug: str
    title: str
    description: str
    tag_list: list[str]
    created_at: Timestamp
    updated_at: Timestamp
    favorited: bool
    favorites_count: int
    author: ProfileRead


class ArticleRead(ArticleSummary):
    body: str


class ArticleEnvelope(WireModel):
    article: ArticleRead


class ArticleList(WireModel):
    articles: list[ArticleSummary]
    articles_count: int
    # Where the next page starts (`?cursor=`); null on the last page.
    next_cursor: str | None = None


class TagsEnvelope(WireModel):
    tags: list[str]
