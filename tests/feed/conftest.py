"""The feed tests set FEED_FANOUT_MAX_FOLLOWERS per test: parametrize `fanout_max_followers`."""

import pytest

from conduit.platform.settings import Settings


@pytest.fixture
def fanout_max_followers() -> int:
    return Settings.model_fields["feed_fanout_max_followers"].default  # type: ignore[no-any-return]


@pytest.fixture
def settings(settings: Settings, fanout_max_followers: int) -> Settings:
    return settings.model_copy(update={"feed_fanout_max_followers": fanout_max_followers})
