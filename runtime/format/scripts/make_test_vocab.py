#!/usr/bin/env python3
"""Builds runtime/format/data/test_vocab.txt, the small WordPiece vocabulary of the test tokenizer.

A subset of the real uncased BERT vocabulary (the backbone's vocab.txt) so that tiny test models tokenize real
SST-2 text the way the real model would, only with more word pieces: the special tokens, every single character
and its `##` continuation (so no word ever becomes [UNK] for lack of a piece), and the pieces most used when
greedy longest-match WordPiece (BERT's algorithm) tokenizes the SST-2 training sentences with the full vocabulary.

usage: make_test_vocab.py VOCAB.txt SST2_TRAIN.tsv OUT.txt [N_FREQUENT]
"""
import collections
import sys
import unicodedata

vocab_path, train_path, out_path = sys.argv[1:4]
n_frequent = int(sys.argv[4]) if len(sys.argv) > 4 else 2500
vocab = [line.rstrip("\n") for line in open(vocab_path, encoding="utf-8")]
index = {tok: i for i, tok in enumerate(vocab)}


def pre_tokenize(text):
    # BertPreTokenizer: split on whitespace and punctuation (SST-2 is already lower-cased and spaced).
    out, word = [], ""
    for ch in text.lower():
        if ch.isspace():
            if word:
                out.append(word)
            word = ""
        elif unicodedata.category(ch).startswith("P") or ch in "$+<=>^`|~":
            if word:
                out.append(word)
            out.append(ch)
            word = ""
        else:
            word += ch
    if word:
        out.append(word)
    return out


def wordpiece(word):
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in index:
                pieces.append(piece)
                break
            end -= 1
        else:
            return ["[UNK]"]
        start = end
    return pieces


counts = collections.Counter()
with open(train_path, encoding="utf-8") as f:
    next(f)
    for line in f:
        for word in pre_tokenize(line.split("\t")[0]):
            counts.update(wordpiece(word))

special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
chars = [t for t in vocab if len(t) == 1 or (t.startswith("##") and len(t) == 3)]
frequent = [t for t, _ in counts.most_common() if t not in special][:n_frequent]
keep = set(chars) | set(frequent)
# Special tokens first (fixed ids 0..4), then the rest in the original vocabulary order for stable diffs.
ordered = special + [t for t in vocab if t in keep and t not in special]
with open(out_path, "w", encoding="utf-8") as out:
    out.write("\n".join(ordered) + "\n")
print(f"{len(ordered)} tokens ({len(chars)} characters, {len(frequent)} frequent pieces) -> {out_path}")
