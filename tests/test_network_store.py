"""The network store's read snapshot: a listing that asks for the networks once per container
reads the store once, and a write made meanwhile (under the store's lock) is never hidden."""

from __future__ import annotations

from pathlib import Path

from pyengine.network.store import NetworkRecord, NetworkStore, read_snapshot


def _record(name: str) -> NetworkRecord:
    return NetworkRecord(id=name * 8, name=name, driver="bridge", created="2026-01-01T00:00:00Z")


def test_a_snapshot_reads_once_and_a_locked_write_shows_after(tmp_path: Path) -> None:
    store = NetworkStore(tmp_path)
    store.root.mkdir()
    store.save(_record("a"))
    with read_snapshot():
        assert [r.name for r in store.all()] == ["a"]
        # written behind the store's back (another process): the snapshot keeps what it read
        NetworkStore(tmp_path).save(_record("b"))
        assert [r.name for r in store.all()] == ["a"]
        with store.locked():  # a read-modify-write reads the disk, snapshot or not
            assert [r.name for r in store.all()] == ["a", "b"]
            store.save(_record("c"))
        assert [r.name for r in store.all()] == ["a", "b", "c"], "the snapshot is read afresh after a write"
        assert store.find("c") is not None
    (store.root / f"{'c' * 8}.json").unlink()
    assert [r.name for r in store.all()] == ["a", "b"], "outside a snapshot every read goes to the disk"
