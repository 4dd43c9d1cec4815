"""``vmmoe ingest``, ``vmmoe search``, ``vmmoe store info|repair``: the concept store from the terminal."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import model.concepts  # the package's lazy facade: FAISS and the encoder load only when a store is opened
from model.concepts.encoder import DEFAULT_ENCODER, canonical_name


def register(subparsers) -> None:
    p = subparsers.add_parser("ingest", help="add text/Markdown/JSONL/CSV/triple files to a concept store and encode them")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="text (.txt), Markdown (.md), JSONL, CSV or triple files to add")
    p.add_argument("--store", required=True, type=Path, help="store folder (created if missing)")
    p.add_argument("--encoder", default=None, help="sentence-transformers name or local path for a new store "
                                                   "(default all-MiniLM-L6-v2)")
    p.add_argument("--review", action="store_true", help="leave passing sentences pending (no auto-accept, no encoding)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--text-column", default="text", help="CSV column holding the text (default: text)")
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser("search", help="nearest sentences to a text in a concept store")
    p.add_argument("query", help="the text to search for (encoded with the store's encoder)")
    p.add_argument("--store", type=Path, default=None, help="store folder (default: the default store)")
    p.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("store", help="inspect or repair a concept store")
    sub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="counts, encoder, index kind, rejections by check")
    info.add_argument("dir", nargs="?", type=Path, default=None, help="store folder (default: the default store)")
    info.add_argument("--json", action="store_true", help="print the statistics as JSON")
    info.set_defaults(func=cmd_info)
    repair = sub.add_parser("repair", help="rebuild a damaged or stale FAISS index from the database")
    repair.add_argument("dir", type=Path, help="store folder")
    repair.set_defaults(func=cmd_repair)


def _open(path: Path | None, progress: bool = True):
    if path is None:
        return model.concepts.open_default_store(progress=progress)
    return model.concepts.ConceptStore.open(path)


def cmd_ingest(args) -> int:
    ConceptStore, read_files = model.concepts.ConceptStore, model.concepts.read_files
    # everything is checked before anything is made: the files, then the store folder and the encoder
    read = read_files(args.paths, text_field=args.text_field, text_column=args.text_column)
    for file, docs, sentences in read.files:
        print(f"read {file}: {sentences} sentences in {docs} document(s)", flush=True)
    if (args.store / "manifest.json").is_file():
        store = ConceptStore.open(args.store)
    elif args.store.exists() and (not args.store.is_dir() or any(args.store.iterdir())):
        raise ValueError(f"{args.store} exists and is not a concept store (nor an empty folder); "
                         f"choose another --store")
    else:
        encoder = args.encoder or DEFAULT_ENCODER
        try:
            store = ConceptStore.create(args.store, encoder=encoder)
            print(f"created store {args.store} ({encoder})", flush=True)
        except ValueError:
            if not (args.store / "manifest.json").is_file():
                raise
            store = ConceptStore.open(args.store)  # another ingest created it a moment ago: add to it
    with store:
        if args.encoder and canonical_name(args.encoder) != store.encoder_name:
            raise ValueError(f"{args.store} holds {store.encoder_name!r} vectors; --encoder {args.encoder!r} differs")
        if not args.review:
            store.encoder  # loaded before taking the writer lock (seconds another ingest need not wait)
        with store.writer():  # one writer from the adding to the encoding (another ingest waits)
            report = store.add_read(read, auto_accept=not args.review)
            print(report, flush=True)
            if not args.review:
                print(store.encode_pending(progress=True), flush=True)
        s = store.stats()
        print(f"store {args.store}: {s['sentences']} sentences in {s['documents']} documents, "
              f"{s['accepted']} accepted, {s['pending']} pending, {s['rejected']} rejected, "
              f"{s['vectors']} vectors ({s['index']} index)")
    return 0


def cmd_search(args) -> int:
    if not args.query.strip():  # refused before a store is opened (or the default one built)
        raise ValueError("the query is empty: give a text to search for, e.g. vmmoe search \"why do tides rise?\"")
    if args.k <= 0:
        raise ValueError(f"-k must be positive, got {args.k}")
    with _open(args.store) as store:
        hits = store.search(args.query, k=args.k)
        if not hits:
            print("no encoded sentences in the store")
        for sentence, score in hits:
            print(f"{score:6.3f}  #{sentence.id:<6} {sentence.text}")
    return 0


def cmd_info(args) -> int:
    with _open(args.dir) as store:
        s = store.stats()
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    width = max(len(k) for k in s)
    for key, value in s.items():
        if key == "rejections":
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_repair(args) -> int:
    with model.concepts.ConceptStore.open(args.dir, repair=True) as store:
        store.rebuild_index()
        print(f"rebuilt the index of {args.dir}: {store.n_vectors} vectors")
    return 0
