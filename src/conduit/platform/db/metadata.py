"""The complete table metadata: importing this module imports every domain's models."""

from conduit.articles import models as _articles  # noqa: F401
from conduit.comments import models as _comments  # noqa: F401
from conduit.feed import models as _feed  # noqa: F401
from conduit.notifications import models as _notifications  # noqa: F401
from conduit.platform.db.base import Base
from conduit.platform.jobs import models as _jobs  # noqa: F401
from conduit.profiles import models as _profiles  # noqa: F401
from conduit.users import models as _users  # noqa: F401
from conduit.webhooks import models as _webhooks  # noqa: F401

metadata = Base.metadata
