"""A result built from every step, read from the trace instead of carried in the state.

Hanoi's list of moves grows by one move per step. Kept in the state, every ``apply`` would
copy it and every commit's snapshot would write it again; the trace already holds each
step's voted answer, in step order, so the list is read from there when it is wanted.

Run it with:  python -m examples.hanoi_moves STORE RUN_ID
"""

import json
import sys

from maker import Store


def hanoi_moves(store: str, run_id: str) -> list[list[int]]:
    """The moves of a Hanoi run, ``[disk, from, to]`` per step, from its recorded answers (a fork's from its
    fork step on: the moves before it are its parent's)."""
    with Store.open(store) as st:
        run = st.run(run_id)
        return [json.loads(a.answer)["move"] for a in st.answers(run.id)]


if __name__ == "__main__":
    for move in hanoi_moves(sys.argv[1], sys.argv[2]):
        print(move)
