"""The write journal (glancefs.fs.write.journal) on its own: who counts as dead,
and what a mount takes over from the journals in a directory. The owners
are real processes, killed for real; no server is needed here (the mount
tests check what happens to the images)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glancefs.fs.write.journal import (
    Journal,
    JournalError,
    Owner,
    boot_id,
    current_owner,
    endpoint_key,
    owner_gone,
)
from glancefs.procfs import start_ticks

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "http://127.0.0.1:9292"


def test_a_reused_pid_or_another_boot_is_a_dead_owner() -> None:
    starts = {100: 5000, 200: 7000}
    alive = Owner("boot-a", 100, 5000)
    assert not owner_gone(alive, "boot-a", starts.get)
    assert owner_gone(alive, "boot-b", starts.get)                      # rebooted since
    assert owner_gone(Owner("boot-a", 200, 6999), "boot-a", starts.get)  # pid reused
    assert owner_gone(Owner("boot-a", 300, 1), "boot-a", starts.get)     # no such pid


def test_this_process_is_alive_and_its_name_round_trips() -> None:
    me = current_owner()
    assert me.pid == os.getpid() and me.start == start_ticks(os.getpid())
    assert not owner_gone(me, boot_id(), start_ticks)
    assert Owner.parse(me.stem) == me
    assert Owner.parse("not-a-journal") is None


def test_the_endpoint_is_kept_without_secrets() -> None:
    assert endpoint_key("HTTPS://user:s3cret@Glance.example:9292/image/?token=t0k") == \
        "https://glance.example:9292/image"
    assert endpoint_key("http://[::1]:9292/") == "http://[::1]:9292"


def test_the_journal_file_holds_ids_and_no_secret(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "http://admin:s3cret@127.0.0.1:9292/?token=t0k")
    journal.open()
    journal.add("id-1", "disk.iso")
    text = Path(journal.path).read_text()
    assert "s3cret" not in text and "t0k" not in text and "admin" not in text
    assert set(json.loads(text)["images"]) == {"id-1"}
    journal.remove("id-1")
    assert json.loads(Path(journal.path).read_text())["images"] == {}
    assert journal.close() == []
    assert list(tmp_path.iterdir()) == []     # a clean end leaves nothing


def start_owner(directory: Path, endpoint: str, image_id: str) -> subprocess.Popen[str]:
    """A process that journals ``image_id`` and lives until killed, as a mount would."""
    code = textwrap.dedent(f"""
        import sys, time
        from glancefs.fs.write.journal import Journal
        journal = Journal({str(directory)!r}, {endpoint!r})
        journal.open()
        journal.add({image_id!r}, "disk.iso")
        print("ready", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_only_journals_of_dead_mounts_of_the_same_endpoint_are_taken_over(
        tmp_path: Path) -> None:
    live = start_owner(tmp_path, ENDPOINT, "live-image")
    dead = start_owner(tmp_path, ENDPOINT, "dead-image")
    other = start_owner(tmp_path, "http://127.0.0.1:9999", "other-endpoint-image")
    kill(dead)
    kill(other)
    try:
        mine = Journal(str(tmp_path), ENDPOINT + "/")
        mine.open()
        found = mine.take_over()
        assert [(f.image_id, f.name, f.owner.pid) for f in found] == \
            [("dead-image", "disk.iso", dead.pid)]
        assert mine.images == {"dead-image"}     # ours now, until the Janitor is done
        stems = {p.name.rsplit(".", 1)[0] for p in tmp_path.iterdir()}
        assert not any(f"-{dead.pid}-" in s for s in stems)    # the dead journal is gone
        assert any(f"-{live.pid}-" in s for s in stems)
        assert any(f"-{other.pid}-" in s for s in stems)       # its own endpoint's business

        kill(live)                                 # a later mount takes that one over
        again = Journal(str(tmp_path), ENDPOINT, owner=Owner(boot_id(), 1, 1))
        again.open()
        assert [f.image_id for f in again.take_over()] == ["live-image"]
        mine.remove("dead-image")
        assert mine.close() == []
    finally:
        for proc in (live, dead, other):
            if proc.poll() is None:
                kill(proc)


def test_a_live_pid_is_never_taken_over_even_without_its_lock(tmp_path: Path) -> None:
    # Same boot, pid and start time as this very process: alive, whatever its lock says.
    lost = Journal(str(tmp_path), ENDPOINT)
    lost.open()
    lost.add("busy-image", "busy.iso")
    assert lost.close() == ["busy-image"]      # the lock is released, the entry stays
    taker = Journal(str(tmp_path), ENDPOINT, owner=Owner(boot_id(), 1, 1))
    taker.open()
    assert taker.take_over() == []
    assert Path(lost.path).exists()


def test_a_symlinked_directory_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    journal = Journal(str(tmp_path / "link"), ENDPOINT)
    with pytest.raises(JournalError):
        journal.open()
    assert list(target.iterdir()) == []
