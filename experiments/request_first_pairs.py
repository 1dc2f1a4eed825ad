"""Copy a pairs folder with the request written before the document as well as after it.

Why: a decoder reads the prompt left to right, so with the FACTS layout (instruction, DOCUMENT, USER
REQUEST) no document token has seen the request when it is encoded; only the last few positions can
compare the two. Writing the request first lets every document token be read with the request in view
(the layout "lost in the middle" found to help retrieval over long contexts). This tries it on the
local model without touching the prompt builder: the stored user turns are rewritten to

    instruction, USER REQUEST: r, DOCUMENT: d, USER REQUEST: r

and everything else (pairs, split, labels) is copied as is. Used for the dev-only run in
docs/local_results.md ("Issue 16, third pass").

    python experiments/request_first_pairs.py outputs/whole/pairs outputs/whole_qfirst/pairs
"""

from __future__ import annotations

import argparse

SEP_DOC, SEP_REQ = "\n\nDOCUMENT: ", "\n\nUSER REQUEST: "


def request_first(user_turn: str) -> str:
    """The user turn with its request also written before the document."""
    if user_turn.count(SEP_DOC) != 1 or SEP_REQ not in user_turn:
        raise ValueError(f"not a gemma-facts user turn (one DOCUMENT, then USER REQUEST): {user_turn[:120]!r}")
    doc_at = user_turn.index(SEP_DOC)
    request = user_turn[user_turn.rindex(SEP_REQ) + len(SEP_REQ):]
    return user_turn[:doc_at] + SEP_REQ + request + user_turn[doc_at:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("dest")
    args = parser.parse_args()
    from datasets import load_from_disk

    def rewrite(example: dict) -> dict:
        messages = [dict(m) for m in example["prompt"]]
        messages[-1]["content"] = request_first(messages[-1]["content"])
        return {"prompt": messages}

    load_from_disk(args.source).map(rewrite).save_to_disk(args.dest)
    print(f"{args.source} → {args.dest}: request written before and after the document")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
