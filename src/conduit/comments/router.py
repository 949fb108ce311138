from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from conduit.articles.dependencies import ArticleKeyBySlug
from conduit.comments import service
from conduit.comments.schemas import CommentEnvelope, CommentList, NewCommentEnvelope
from conduit.platform.db.session import AutoCommitRoute, SessionDep
from conduit.platform.idempotency import Idempotency
from conduit.users.dependencies import CurrentUser, OptionalUser

router = APIRouter(tags=["Comments"], route_class=AutoCommitRoute)

CommentId = Annotated[int, Path(alias="id", ge=1, le=2**63 - 1, description="ID of the comment")]


@router.get("/articles/{slug}/comments", summary="Get the comments on an article")
async def list_comments(
    article: ArticleKeyBySlug, session: SessionDep, viewer: OptionalUser
) -> CommentList:
    return CommentList(comments=await service.list_for(session, article=article, viewer=viewer))


@router.post("/articles/{slug}/comments", summary="Comment on an article")
async def add_comment(
    user: CurrentUser,
    body: NewCommentEnvelope,
    article: ArticleKeyBySlug,
    session: SessionDep,
    idempotency: Idempotency,
) -> CommentEnvelope:
    comment = await service.add(session, article=article, author=user, new=body.comment)
    # The author is the caller, and nobody follows themselves.
    envelope = CommentEnvelope(comment=service.to_read(comment, following=False))
    idempotency.remember(session, envelope, status_code=status.HTTP_200_OK)
    return envelope


@router.delete(
    "/articles/{slug}/comments/{id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a comment",
)
async def delete_comment(
    user: CurrentUser, article: ArticleKeyBySlug, comment_id: CommentId, session: SessionDep
) -> None:
    await service.remove(session, article=article, comment_id=comment_id, user=user)
