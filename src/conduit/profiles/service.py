"""Public profiles and the follow graph."""

from collections.abc import Collection

from sqlalchemy import Select, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.errors import NotFound, ValidationFailed
from conduit.profiles.models import Follow
from conduit.profiles.schemas import ProfileRead
from conduit.users import repository as users_repository
from conduit.users.models import User


class ProfileNotFound(NotFound):
    field = "profile"


def to_profile(user: User, *, following: bool) -> ProfileRead:
    return ProfileRead(
        username=user.username, bio=user.bio, image=user.image or "", following=following
    )


async def get_user(session: AsyncSession, username: str) -> User:
    user = await users_repository.get_by_username(session, username)
    if user is None:
        raise ProfileNotFound()
    return user


async def followed_among(
    session: AsyncSession, *, follower: User | None, candidates: Collection[int]
) -> set[int]:
    """The ids in `candidates` that `follower` follows: one query for any number of authors."""
    if follower is None or not candidates:
        return set()
    result = await session.execute(
        select(Follow.followee_id).where(
            Follow.follower_id == follower.id, Follow.followee_id.in_(set(candidates))
        )
    )
    return set(result.scalars())


async def is_following(session: AsyncSession, *, follower: User | None, followee: User) -> bool:
    return followee.id in await followed_among(session, follower=follower, candidates=[followee.id])


async def follow(session: AsyncSession, *, follower: User, followee: User) -> None:
    if follower.id == followee.id:
        raise ValidationFailed("cannot follow yourself", field="profile")
    await session.execute(
        insert(Follow)
        .values(follower_id=follower.id, followee_id=followee.id)
        .on_conflict_do_nothing()
    )


async def unfollow(session: AsyncSession, *, follower: User, followee: User) -> None:
    await session.execute(
        delete(Follow).where(Follow.follower_id == follower.id, Follow.followee_id == followee.id)
    )


def followee_ids(follower_id: int) -> Select[int]:
    """A subquery of the ids `follower_id` follows, for other modules' filters."""
    return select(Follow.followee_id).where(Follow.follower_id == follower_id)
