"""A text-file upload box: pick or drop files, refused in the browser above a size limit, sent in chunks.

Why not Panel's ``FileDropper``: it wraps FilePond, whose draw loop calls ``requestAnimationFrame``
60 times a second from the moment its script loads until the page closes, whether or not an upload
box is on screen (pqina/filepond#243). In headless chromium that loop alone took ~10% of a core on
every open workbench page and slowed a training run on the same machine (``benchmarks/bench_workbench``).
``FileInput`` has no loop but sends a whole file in one websocket message with no size check: a file
over the server's message limit (20 MB) drops the session. This box does neither: the browser checks
each file's size before reading it, then sends it in base64 chunks of ``chunk_bytes`` through
``model.send_msg``; the server assembles the chunks and checks the size again (the browser's word is
not trusted).

Usage::

    box = TextUpload(max_bytes=5 * 2**20)
    box.on_upload(lambda name, data, size: ...)   # data: bytes, or None when the file was refused
"""
from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from typing import Callable

import param
from panel.custom import JSComponent

UploadCallback = Callable[[str, "bytes | None", int], None]
MAX_PENDING = 4  # unfinished uploads kept per box (a closed tab can leave one half-sent)


class TextUpload(JSComponent):
    """Upload box for text files; ``on_upload(callback)`` gets ``(filename, bytes | None, size)``."""

    label = param.String(default="Drop text files here, or click to choose", doc="text in the box")
    accept = param.String(default=".txt,.md,.rst,text/*", doc="the file picker's filter")
    multiple = param.Boolean(default=True)
    max_bytes = param.Integer(default=5 * 2**20, bounds=(1, None), doc="larger files are refused unread")
    chunk_bytes = param.Integer(default=256 * 1024, bounds=(1024, 8 * 2**20), constant=True,
                                doc="bytes per websocket message (before base64)")

    _esm = """
    const toBase64 = buf => {
      const bytes = new Uint8Array(buf);
      let s = "";
      for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return btoa(s);
    };

    export function render({ model, el }) {
      const zone = document.createElement("label");  // a click on a <label> opens its <input>'s picker
      zone.className = "wb-upload-zone";
      const input = document.createElement("input");
      input.type = "file";
      input.className = "wb-upload-input";
      const text = document.createElement("span");
      const status = document.createElement("span");
      status.className = "wb-upload-status";
      const sync = () => {
        input.accept = model.accept;
        input.multiple = model.multiple;
        text.textContent = model.label;
      };
      sync();
      model.on(["accept", "multiple", "label"], sync);
      zone.append(input, text, status);
      el.append(zone);

      let busy = Promise.resolve();
      const send = files => { busy = busy.then(() => sendAll(files)); };
      const sendAll = async files => {
        for (const file of files) {
          if (file.size > model.max_bytes) {  // refused before a byte is read
            model.send_msg({ kind: "refused", name: file.name, size: file.size });
            status.textContent = `${file.name} is too large`;
            continue;
          }
          const id = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
          const count = Math.max(1, Math.ceil(file.size / model.chunk_bytes));
          for (let index = 0; index < count; index++) {
            status.textContent = `sending ${file.name} (${Math.round(100 * index / count)}%)`;
            const part = file.slice(index * model.chunk_bytes, (index + 1) * model.chunk_bytes);
            model.send_msg({ kind: "chunk", id, name: file.name, size: file.size, index, count,
                             data: toBase64(await part.arrayBuffer()) });
          }
          status.textContent = `${file.name} sent`;
        }
        input.value = "";  // choosing the same file again fires "change" again
      };
      input.addEventListener("change", () => send([...input.files]));
      zone.addEventListener("dragover", e => { e.preventDefault(); zone.classList.add("wb-upload-over"); });
      zone.addEventListener("dragleave", () => zone.classList.remove("wb-upload-over"));
      zone.addEventListener("drop", e => {
        e.preventDefault();
        zone.classList.remove("wb-upload-over");
        send([...e.dataTransfer.files]);
      });
    }
    """

    _stylesheets = ["""
    .wb-upload-zone { display: flex; flex-direction: column; align-items: center; justify-content: center;
      gap: 4px; min-height: 64px; padding: 10px; border: 2px dashed #9aa4b1; border-radius: 6px;
      color: #3c4650; background: #f6f8fa; cursor: pointer; font: 14px sans-serif; text-align: center; }
    .wb-upload-zone.wb-upload-over { border-color: #1f77b4; background: #e8f1fa; }
    .wb-upload-input { position: absolute; width: 1px; height: 1px; opacity: 0; }
    .wb-upload-status { font-size: 12px; color: #6a737d; }
    """]

    def __init__(self, **params):
        super().__init__(**params)
        self._callbacks: list[UploadCallback] = []
        self._pending: OrderedDict[str, dict] = OrderedDict()
        self._dropped: OrderedDict[str, None] = OrderedDict()  # ids refused mid-way: their later chunks are ignored

    def on_upload(self, callback: UploadCallback) -> None:
        """Call ``callback(filename, data, size)`` for every file: ``data`` is None when it was refused."""
        self._callbacks.append(callback)

    def _emit(self, name: str, data: bytes | None, size: int) -> None:
        for cb in self._callbacks:
            cb(name, data, size)

    def _drop(self, uid: str) -> None:
        self._pending.pop(uid, None)
        self._dropped[uid] = None
        while len(self._dropped) > 64:
            self._dropped.popitem(last=False)

    def _handle_msg(self, msg) -> None:
        """One message from the browser: ``refused`` (too large, unread) or one ``chunk`` of a file."""
        try:
            kind, name, size = msg["kind"], str(msg["name"]), int(msg["size"])
        except (TypeError, KeyError, ValueError):
            return  # not ours: nothing to report to anyone
        if kind == "refused":
            self._emit(name, None, size)
            return
        if kind != "chunk" or str(msg.get("id")) in self._dropped:
            return
        if size > self.max_bytes:
            self._drop(str(msg.get("id")))
            self._emit(name, None, size)
            return
        try:
            uid, index, count = str(msg["id"]), int(msg["index"]), int(msg["count"])
            data = base64.b64decode(msg["data"], validate=True)
        except (KeyError, ValueError, binascii.Error):
            self._drop(str(msg.get("id")))
            return
        if not 0 <= index < count:
            self._drop(uid)
            return
        upload = self._pending.setdefault(uid, {"name": name, "size": size, "count": count, "parts": {}})
        upload["parts"][index] = data
        received = sum(len(p) for p in upload["parts"].values())
        if received > self.max_bytes or received > size:  # more than it announced: drop it whole
            self._drop(uid)
            self._emit(name, None, max(received, size))
            return
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        if len(upload["parts"]) == count:
            self._pending.pop(uid)
            whole = b"".join(upload["parts"][i] for i in range(count))
            self._emit(name, whole, len(whole))
