"""Sets of event seqs kept as ranges: "has this seq been seen?" in memory that grows with the
gaps between the seqs seen, not with their number.

An event log's seqs come nearly in order: a node hands its listeners every event it commits
in seq order, so what one listener has seen is one range ``[lo, hi]`` that grows at its end,
broken only where another node's events fell between (then the stream hub reads those back).
``SeqRanges`` keeps sorted disjoint ranges; adding the next seq extends the last one in place,
and anything else is a bisect. Each range remembers when it last grew; ``trim`` forgets those
that have not grown since a given time (how long a repeat can still come).

Used by the queue view (bus/commands/queueview.py) to count each ``CommandResult`` once
although it may reach it twice (notified here, then read back from the store, or the other
way round): a set of seqs and an entry per command cost ~190 bytes per finished command, over
100 MB for a minute of batches at 10,000 commands/s.
"""

from __future__ import annotations

from bisect import bisect_right


class SeqRanges:
    __slots__ = ("los", "his", "grown")

    def __init__(self) -> None:
        self.los: list[int] = []  # each range's first seq, ascending
        self.his: list[int] = []  # each range's last seq
        self.grown: list[float] = []  # when each range last grew

    def __len__(self) -> int:
        """How many ranges (not seqs) are kept."""
        return len(self.los)

    def __contains__(self, seq: int) -> bool:
        his = self.his
        if his and his[-1] < seq:  # past everything seen: the common case
            return False
        i = bisect_right(self.los, seq)
        return i > 0 and seq <= his[i - 1]

    def add(self, seq: int, now: float) -> None:
        los, his, grown = self.los, self.his, self.grown
        if his and his[-1] + 1 == seq:  # the next one: the last range grows
            his[-1] = seq
            grown[-1] = now
            return
        i = bisect_right(los, seq)
        if i > 0 and seq <= his[i - 1]:
            return  # seen already
        joins_left = i > 0 and his[i - 1] + 1 == seq
        joins_right = i < len(los) and los[i] == seq + 1
        if joins_left and joins_right:  # fills the gap between two ranges: one range
            his[i - 1] = his[i]
            grown[i - 1] = now
            del los[i], his[i], grown[i]
        elif joins_left:
            his[i - 1] = seq
            grown[i - 1] = now
        elif joins_right:
            los[i] = seq
            grown[i] = now
        else:
            los.insert(i, seq)
            his.insert(i, seq)
            grown.insert(i, now)

    def trim(self, before: float) -> None:
        """Forget the ranges that have not grown since ``before``."""
        if not self.grown or min(self.grown) >= before:
            return
        keep = [k for k, t in enumerate(self.grown) if t >= before]
        self.los = [self.los[k] for k in keep]
        self.his = [self.his[k] for k in keep]
        self.grown = [self.grown[k] for k in keep]
