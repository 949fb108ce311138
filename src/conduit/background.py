"""Every job, event handler and periodic job of the app: importing this module registers them.

The server imports it so that `publish` knows each event's subscribers; the worker, so that it
can run them.
"""

from conduit.feed import handlers as _feed  # noqa: F401
from conduit.notifications import handlers as _notifications  # noqa: F401
from conduit.platform.jobs import cleanup as _cleanup  # noqa: F401
from conduit.users import emails as _emails  # noqa: F401
from conduit.users import jobs as _users  # noqa: F401
from conduit.webhooks import handlers as _webhooks  # noqa: F401
