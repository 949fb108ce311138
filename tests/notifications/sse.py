"""Reading server-sent events the way the HTML standard says a client does."""

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServerEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def is_comment(self) -> bool:
        return not self.data and self.event == "message" and bool(self.comments)


class EventParser:
    """Feed it lines (without their line ends); it returns each event as a blank line ends it.

    A block of comment lines alone comes back as an event with only `comments`, so that tests
    can see keep-alives, which a browser would silently skip.
    """

    def __init__(self) -> None:
        self._current = ServerEvent()
        self._data: list[str] = []
        self._touched = False

    def feed(self, line: str) -> ServerEvent | None:
        if line == "":
            if not self._touched:
                return None
            event = self._current
            event.data = "\n".join(self._data)
            self._current, self._data, self._touched = ServerEvent(), [], False
            return event
        self._touched = True
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            self._current.comments.append(value)
        elif name == "event":
            self._current.event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._current.id = value
        elif name == "retry" and value.isdigit():
            self._current.retry = int(value)
        return None


def parse(body: bytes) -> list[ServerEvent]:
    parser = EventParser()
    events = []
    for line in body.decode().split("\n"):
        event = parser.feed(line)
        if event is not None:
            events.append(event)
    return events
