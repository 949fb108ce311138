import re
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from conduit.platform.cache import CacheDep
from conduit.platform.cached_reads import CachedRead, by_path_text
from conduit.platform.db.session import AutoCommitRoute, SessionDep
from conduit.platform.schemas import Text
from conduit.profiles import service
from conduit.profiles.schemas import ProfileEnvelope
from conduit.users.dependencies import CurrentUser, OptionalUser

router = APIRouter(tags=["Profile"], route_class=AutoCommitRoute)

UsernamePath = Annotated[Text, Path(max_length=255, description="Username of the profile")]


@router.get(
    "/profiles/{username}",
    summary="Get a profile",
    response_model=ProfileEnvelope,
    response_class=JSONResponse,
)
async def get_profile(
    username: UsernamePath, session: SessionDep, cache: CacheDep, viewer: OptionalUser
) -> JSONResponse:
    profile = await service.get_profile_cached(session, cache, username=username, viewer=viewer)
    return JSONResponse(profile)


@router.post("/profiles/{username}/follow", summary="Follow a user")
async def follow(
    username: UsernamePath, session: SessionDep, viewer: CurrentUser
) -> ProfileEnvelope:
    user = await service.get_user(session, username)
    await service.follow(session, follower=viewer, followee=user)
    return ProfileEnvelope(profile=service.to_profile(user, following=True))


@router.delete("/profiles/{username}/follow", summary="Unfollow a user")
async def unfollow(
    username: UsernamePath, session: SessionDep, viewer: CurrentUser
) -> ProfileEnvelope:
    user = await service.get_user(session, username)
    await service.unfollow(session, follower=viewer, followee=user)
    return ProfileEnvelope(profile=service.to_profile(user, following=False))


def _profile_body(entry: dict[str, Any]) -> Any:
    # Cached with `following: false`, which is what an anonymous caller sees.
    return {"profile": entry["profile"]}


# What the cached-reads layer answers before routing (see `platform.cached_reads`).
CACHED_READS = (
    CachedRead(
        re.compile(r"/profiles/(?P<username>[^/]+)"),
        "/profiles/{username}",
        by_path_text("username", service.profile_entry),
        _profile_body,
    ),
)
