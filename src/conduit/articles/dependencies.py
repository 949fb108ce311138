from typing import Annotated

from fastapi import Depends, Path

from conduit.articles import repository, service
from conduit.articles.repository import ArticleKey, ArticleRow
from conduit.platform.db.session import SessionDep
from conduit.platform.schemas import Text
from conduit.users.dependencies import OptionalUser

SlugPath = Annotated[Text, Path(max_length=255, description="Slug of the article")]


async def article_by_slug(slug: SlugPath, session: SessionDep, viewer: OptionalUser) -> ArticleRow:
    return await service.get(session, slug, viewer=viewer)


ArticleBySlug = Annotated[ArticleRow, Depends(article_by_slug)]


async def article_key_by_slug(slug: SlugPath, session: SessionDep) -> ArticleKey:
    key = await repository.get_key_by_slug(session, slug)
    if key is None:
        raise service.ArticleNotFound()
    return key


# For routes on what hangs off an article (its comments), which show nothing of the article.
ArticleKeyBySlug = Annotated[ArticleKey, Depends(article_key_by_slug)]
