"""Comments on articles."""

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager

from conduit.articles.repository import ArticleKey
from conduit.comments.models import Comment
from conduit.comments.schemas import CommentRead, NewComment
from conduit.platform.errors import Forbidden, NotFound
from conduit.platform.jobs.queue import publish
from conduit.profiles import service as profiles_service
from conduit.users.models import User


class CommentNotFound(NotFound):
    field = "comment"


class NotCommentAuthor(Forbidden):
    field = "comment"
    message = "can only be deleted by its author or a moderator"


def to_read(comment: Comment, *, following: bool) -> CommentRead:
    return CommentRead(
        id=comment.id,
        created_at=comment.created_at,
        updated_at=comment.updated_at,
        body=comment.body,
        author=profiles_service.to_profile(comment.author, following=following),
    )


async def list_for(
    session: AsyncSession, *, article: ArticleKey, viewer: User | None
) -> list[CommentRead]:
    """Newest first, with each author's profile as the viewer sees it: two statements in all."""
    result = await session.scalars(
        select(Comment)
        .join(Comment.author)
        .options(contains_eager(Comment.author))
        .where(Comment.article_id == article.id)
        .order_by(Comment.created_at.desc(), Comment.id.desc())
    )
    comments = list(result)
    followed = await profiles_service.followed_among(
        session, follower=viewer, candidates={comment.author_id for comment in comments}
    )
    return [to_read(comment, following=comment.author_id in followed) for comment in comments]


async def add(
    session: AsyncSession, *, article: ArticleKey, author: User, new: NewComment
) -> Comment:
    comment = Comment(body=new.body, article_id=article.id, author=author)
    session.add(comment)
    # The INSERT returns the timestamps the database set.
    await session.flush()
    await publish(
        session,
        "comment.created",
        comment_id=comment.id,
        article_id=article.id,
        article_author_id=article.author_id,
        author_id=author.id,
        slug=article.slug,
    )
    return comment


async def remove(
    session: AsyncSession, *, article: ArticleKey, comment_id: int, user: User
) -> None:
    author_id = await session.scalar(
        select(Comment.author_id).where(Comment.id == comment_id, Comment.article_id == article.id)
    )
    if author_id is None:
        raise CommentNotFound()
    if author_id != user.id and not user.can_moderate:
        raise NotCommentAuthor()
    await session.execute(sql_delete(Comment).where(Comment.id == comment_id))
    await publish(
        session,
        "comment.deleted",
        comment_id=comment_id,
        article_id=article.id,
        article_author_id=article.author_id,
        author_id=author_id,
        slug=article.slug,
    )
