"""Each track's identity, decided by voting over its recent embeddings.

Every embedding of a track is one vote: the gallery's best person when its score is above the
threshold, else ``unknown``. The track's identity is the name with at least ``min_votes`` of the
last ``window`` votes and more votes than any other name; until then (and whenever ``unknown``
has the most votes) it stays what it was, starting as unknown. So one stray frame never renames a
track, and a change of name needs the same evidence a first naming does."""
from __future__ import annotations

from collections import Counter, deque

UNKNOWN = None


class Voter:
    def __init__(self, window: int = 5, min_votes: int = 3):
        self.window, self.min_votes = int(window), int(min_votes)

    def vote(self, state: dict, name: str | None, score: float) -> tuple[str | None, bool]:
        """Record one vote in a track's ``state``; -> (its identity now, whether it changed)."""
        votes = state.setdefault("votes", deque(maxlen=self.window))
        votes.append((name, float(score)))
        state.setdefault("identity", UNKNOWN)
        counts = Counter(n for n, _ in votes)
        ranked = counts.most_common()
        top, n_top = ranked[0]
        tie = len(ranked) > 1 and ranked[1][1] == n_top
        before = state["identity"]
        if top is not UNKNOWN and n_top >= self.min_votes and not tie:
            state["identity"] = top
        elif top is UNKNOWN and n_top >= self.min_votes and not tie:
            state["identity"] = UNKNOWN
        state["score"] = max((s for n, s in votes if n == state["identity"]), default=float(score))
        return state["identity"], state["identity"] != before
