"""The embedded outboxes as the dispatcher drives them: many sends at once."""

from __future__ import annotations

import mailbox
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from adapters.outbox import MaildirOutbox

WRITERS = 16


def test_writers_racing_to_a_new_maildir_all_keep_their_email(tmp_path: Path) -> None:
    for round_number in range(20):
        folder = tmp_path / f"outbox-{round_number}" / "mail"
        outbox = MaildirOutbox(folder)
        start = threading.Barrier(WRITERS)

        def write(n: int, outbox: MaildirOutbox = outbox, start=start) -> str:
            start.wait()
            return outbox.store(f"Subject: Reminder {n}\n\nSee you.\n".encode())

        with ThreadPoolExecutor(WRITERS) as pool:
            keys = list(pool.map(write, range(WRITERS)))

        assert len(set(keys)) == WRITERS
        assert len(mailbox.Maildir(folder, create=False)) == WRITERS
