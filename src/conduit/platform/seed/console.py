"""Progress bars for `conduit seed`: one per table and phase, and a line with its time."""

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBars

from conduit.platform.seed.load import Progress


class ProgressBars(Progress):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._bars = RichBars(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "ProgressBars":
        self._bars.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._bars.stop()

    def start(self, phase: str, total: int | None) -> None:
        self._tasks[phase] = self._bars.add_task(phase, total=total)

    def advance(self, phase: str, amount: int) -> None:
        task = self._tasks.get(phase)
        if task is not None:
            self._bars.advance(task, amount)

    def finish(self, phase: str, seconds: float, rows: int | None) -> None:
        task = self._tasks.pop(phase, None)
        if task is not None:
            self._bars.remove_task(task)
        counted = f"{rows:>12,} rows" if rows is not None else " " * 17
        self.console.print(f"{phase:<16} {counted} {seconds:>9.1f} s", highlight=False)
