"""Stop sequences on a stream: partial matches are held back."""

from __future__ import annotations

from backend.engines.local import StopTrimmer


def test_stop_trimmer_holds_back_partial_stops() -> None:
    trimmer = StopTrimmer(("END",))
    out = [trimmer.feed(p) for p in ("Hello E", "N", "D and more")]
    assert "".join(out) == "Hello "
    assert trimmer.stopped
    plain = StopTrimmer(("END",))
    assert "".join([plain.feed("Hello E"), plain.feed("NOUGH"), plain.flush()]) == "Hello ENOUGH"
