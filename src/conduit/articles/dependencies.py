from typing import Annotated

from fastapi import Depends, Path

from conduit.articles import service
from conduit.articles.repository import ArticleRow
from conduit.platform.db.session import SessionDep
from conduit.platform.schemas import Text
from conduit.users.dependencies import OptionalUser

SlugPath = Annotated[Text, Path(max_length=255, description="Slug of the article")]


async def article_by_slug(slug: SlugPath, session: SessionDep, viewer: OptionalUser) -> ArticleRow:
    return await service.get(session, slug, viewer=viewer)


ArticleBySlug = Annotated[ArticleRow, Depends(article_by_slug)]
