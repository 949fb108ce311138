"""Public profiles and the follow graph.

Profile reads go through the cache (`platform.cache`) without the caller's `following` flag,
which is read per request; so following someone changes nothing cached.
"""

from collections.abc import Collection
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.cache import Cache, CacheAddress, invalidate_after_commit
from conduit.platform.errors import NotFound, ValidationFailed
from conduit.platform.jobs.queue import publish
from conduit.profiles.models import Follow
from conduit.profiles.schemas import ProfileRead
from conduit.users import repository as users_repository
from conduit.users.models import User

# Cache generations: every profile embedded in cached articles and lists, and one profile.
AUTHORS = "authors"


def profile_generation(username: str) -> str:
    return f"profile:{username.lower()}"


def profile_entry(username: str) -> CacheAddress:
    """The cached envelope of one profile, without the caller's `following` flag."""
    return CacheAddress("profile", f"profile:{username.lower()}", (profile_generation(username),))


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
    """The ids in `candidates` that `follower` follows: one query for any number of authors,
    none when the only candidate is the follower (nobody follows themselves: the follow table
    refuses it), as for an author reading their own article back after writing it."""
    if follower is None:
        return set()
    others = set(candidates) - {follower.id}
    if not others:
        return set()
    result = await session.execute(
        select(Follow.followee_id).where(
            Follow.follower_id == follower.id, Follow.followee_id.in_(others)
        )
    )
    return set(result.scalars())


async def follow(session: AsyncSession, *, follower: User, followee: User) -> None:
    if follower.id == followee.id:
        raise ValidationFailed("cannot follow yourself", field="profile")
    inserted = await session.scalar(
        insert(Follow)
        .values(follower_id=follower.id, followee_id=followee.id)
        .on_conflict_do_nothing()
        .returning(Follow.follower_id)
    )
    if inserted is not None:
        await publish(session, "user.followed", follower_id=follower.id, followee_id=followee.id)


async def unfollow(session: AsyncSession, *, follower: User, followee: User) -> None:
    deleted = await session.scalar(
        delete(Follow)
        .where(Follow.follower_id == follower.id, Follow.followee_id == followee.id)
        .returning(Follow.follower_id)
    )
    if deleted is not None:
        await publish(session, "user.unfollowed", follower_id=follower.id, followee_id=followee.id)


async def get_profile_cached(
    session: AsyncSession, cache: Cache, *, username: str, viewer: User | None
) -> dict[str, Any]:
    """The profile envelope as `viewer` sees it, in wire format: a cache hit has nothing to
    validate."""

    async def load() -> dict[str, Any] | None:
        user = await users_repository.get_by_username(session, username)
        if user is None:
            return None
        return {"id": user.id, "profile": to_profile(user, following=False).model_dump()}

    entry = await cache.get_or_load(profile_entry(username), load=load)
    if entry is None:
        raise ProfileNotFound()
    followed = await followed_among(session, follower=viewer, candidates=[entry["id"]])
    return {"profile": {**entry["profile"], "following": bool(followed)}}


def public_profile_changed(session: AsyncSession, *usernames: str) -> None:
    """After commit, stop serving the cached profile under each of `usernames` (old and new
    names after a rename) and every cached article or list that embeds an author."""
    invalidate_after_commit(session, AUTHORS, *(profile_generation(name) for name in usernames))
