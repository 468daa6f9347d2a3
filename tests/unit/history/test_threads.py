"""Opening the history from many threads at once (the daemon does) is safe."""

import threading
from pathlib import Path

from sealdump.history import History


def test_concurrent_opens_of_a_fresh_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    errors: list[BaseException] = []

    def open_and_write() -> None:
        try:
            store = History(url)
            store.start("db1", "job", "schedule")
            store.close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = History(url)
    assert len(store.runs(limit=20)) == 8
    store.close()
