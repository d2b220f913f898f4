"""Which token sequences the generator's KV cache holds: the prefix cache's bookkeeping.

Each llama.cpp sequence id has a KV stream of its own (``kv_unified=false``), so a
sequence's cells always lie in position order. That matters: llama.cpp's attention
sums a sequence's cells in cell order, and in a shared (unified) cache a cell that
fills a hole left by an evicted sequence lands before the sequence's earlier cells,
which changed logits by up to 0.9 here and so changed greedy output. A prefix is
reused by copying the stream (``memory_seq_cp`` of the whole stream, then trimming it
to the common prefix), a memory copy that costs milliseconds against seconds of
prompt evaluation.

This module is plain data, no llama.cpp: per sequence id the tokens whose keys and
values are cached, which ids are free, busy (a request decoding) or idle (a finished
prompt kept for reuse), and the least-recently-used order of the idle ones. The
engine makes the matching llama.cpp calls for the ids it is given.
"""

from __future__ import annotations

from collections import OrderedDict


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class SequenceTable:
    """Sequence ids ``0..slots-1`` decode requests; ids ``slots..slots+entries-1`` keep
    finished prompts for reuse.

    Active sequences stay in the low, contiguous ids because llama.cpp's attention over
    a batch spans the streams from its lowest to its highest sequence id and the longest
    of them: a batch of 4 among 8 idle 300-token entries decoded no faster than one
    sequence alone. A finished sequence is copied into an entry id, freeing its slot.
    """

    def __init__(self, slots: int, entries: int):
        self.free_slots = list(range(slots - 1, -1, -1))
        self.free_entries = list(range(slots + entries - 1, slots - 1, -1))
        self.tokens: dict[int, list[int]] = {}
        self.idle: OrderedDict[int, None] = OrderedDict()  # least recently used first

    def longest_prefix(self, prompt: list[int]) -> tuple[int | None, int]:
        """The sequence holding the longest prefix of ``prompt``, and its length."""
        best, length = None, 0
        for seq, tokens in self.tokens.items():
            n = common_prefix(tokens, prompt)
            if n > length:
                best, length = seq, n
        return best, length

    def take(self) -> int:
        """A free slot for a new request (there is one while fewer than ``slots`` run)."""
        seq = self.free_slots.pop()
        self.tokens[seq] = []
        return seq

    def copy(self, src: int, dst: int, k: int) -> None:
        """``dst`` (just taken) starts with ``src``'s first k tokens."""
        self.tokens[dst] = self.tokens[src][:k]
        if src in self.idle:
            self.idle.move_to_end(src)

    def extend(self, seq: int, tokens: list[int]) -> None:
        """``tokens`` were decoded for ``seq`` after what it holds."""
        self.tokens[seq].extend(tokens)

    def keep(self, slot: int) -> tuple[int | None, list[int]]:
        """``slot`` finished and is free again. Returns the entry id to copy it into (None
        when it is not worth keeping: empty, no entries, or an entry holds it already)
        and the entry ids to clear first: entries whose tokens it holds, and the least
        recently used one when every entry is taken."""
        mine = self.tokens.pop(slot)
        self.free_slots.append(slot)
        removed = [self.drop(e) for e in list(self.idle)
                   if common_prefix(self.tokens[e], mine) == len(self.tokens[e])]
        if not mine or any(common_prefix(self.tokens[e], mine) == len(mine) for e in self.idle):
            return None, removed
        if not self.free_entries:
            if not self.idle:
                return None, removed
            removed.append(self.drop(next(iter(self.idle))))
        entry = self.free_entries.pop()
        self.tokens[entry] = mine
        self.idle[entry] = None
        return entry, removed

    def drop(self, seq: int) -> int:
        """Forget ``seq`` (an idle entry, or a slot whose request failed)."""
        del self.tokens[seq]
        if seq in self.idle:
            del self.idle[seq]
            self.free_entries.append(seq)
        else:
            self.free_slots.append(seq)
        return seq

    def clear(self) -> None:
        for seq in list(self.tokens):
            self.drop(seq)
