"""The Python side of tests/interop.rs, driving the real pyshmem 1.4.0.

Usage: peer.py <command> [args...]. Results are printed as protocol lines
``@@ <text>`` on stdout (flushed); payloads travel through files as raw
C-order little-endian bytes (``ndarray.tobytes()``), manifests as JSON.
Commands that must start together with a Rust actor print ``@@ ready`` and
wait for a ``go`` line on stdin.
"""

import json
import os
import sys
import time

import numpy as np
import pyshmem


def say(text):
    print(f"@@ {text}", flush=True)


def wait_go(text="ready"):
    """Says `text`, then waits for a 'go' line on stdin."""
    say(text)
    line = sys.stdin.readline().strip()
    if line != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")


def cmd_create_write(manifest):
    """For each entry {name, dtype, shape, file, frame_id, notify}: create the stream,
    write the file's bytes as one frame with the frame id, and report its instance id."""
    for e in json.load(open(manifest)):
        dtype = np.dtype(e["dtype"])
        data = np.fromfile(e["file"], dtype=dtype).reshape(e["shape"])
        s = pyshmem.create(e["name"], shape=tuple(e["shape"]), dtype=dtype, notify=bool(e.get("notify", False)))
        s.write(data, frame_id=int(e["frame_id"]))
        say(f"created {e['name']} {s.instance_id} {s.count}")
        s.close()


def cmd_read_dump(manifest):
    """For each entry {name, file}: open read-only, read one publication, dump its payload
    bytes to the file and report count, frame id, dtype, shape and instance id."""
    for e in json.load(open(manifest)):
        s = pyshmem.open(e["name"], readonly=True)
        p = s.read_publication()
        payload = np.ascontiguousarray(p.payload)
        with open(e["file"], "wb") as f:
            f.write(payload.tobytes())
        shape = ",".join(str(d) for d in payload.shape)
        say(f"read {e['name']} {p.count} {p.frame_id} {payload.dtype} {shape} {s.instance_id}")
        s.close()


def cmd_increment(name, n):
    """n locked read-modify-write increments of element 0, started on 'go'."""
    s = pyshmem.open(name)
    wait_go()
    for _ in range(int(n)):
        with s.locked(timeout=30):
            v = s.read(safe=False)[0]
            s.write_locked(np.array([v + 1], dtype=s.dtype))
    say("done")
    s.close()


def cmd_read_new_parked(name):
    """read_new without a timeout, in one futex park: pyshmem's park cap (50 ms, after which
    it looks at the count again) is raised to an hour, so only a writer's wake ends the
    wait soon. Says "waiting <count> <futex word address>", then "got <value> <count>", or
    "refused <message>" where pyshmem refuses the stream (InconsistentStreamError)."""
    pyshmem._shared._NOTIFY_MAX_PARK = 3600.0
    s = pyshmem.open(name, readonly=True)
    say(f"waiting {s.count} {s._seq_word_addr:#x}")
    try:
        v = s.read_new()
    except pyshmem.InconsistentStreamError as e:
        say(f"refused {e}")
    else:
        say(f"got {v.reshape(-1)[0]} {s.last_read_count}")
    s.close()


def cmd_write_on_go(name, value, frame_id):
    """Writes [value]*size with frame_id after 'go'."""
    s = pyshmem.open(name)
    wait_go()
    s.write(np.full(s.shape, int(value), dtype=s.dtype), frame_id=int(frame_id))
    say(f"wrote {s.count}")
    s.close()


def cmd_write_bool_mask_on_go(name):
    """After 'go', writes a uint8 mask viewed as bool without a copy (bytes 0, 255, 2, 1:
    numpy reads each nonzero byte as True). Says "wrote <count> <stored bytes> <as read>",
    the bytes and values pyshmem's own read returns, comma-separated."""
    s = pyshmem.open(name)
    wait_go()
    s.write(np.array([0, 255, 2, 1], dtype=np.uint8).view(bool))
    got = s.read()
    stored = ",".join(str(b) for b in got.view(np.uint8))
    values = ",".join(str(bool(v)) for v in got)
    say(f"wrote {s.count} {stored} {values}")
    s.close()


def cmd_write_n(name, n, value):
    """Writes n frames of [value]*size (frame ids value, value+1, ...) at once."""
    s = pyshmem.open(name)
    for i in range(int(n)):
        s.write(np.full(s.shape, int(value) + i, dtype=s.dtype), frame_id=int(value) + i)
    say(f"wrote {s.count}")
    s.close()


def cmd_list():
    """pyshmem's list_streams maps each `_meta` before its own error handling, so a pyshmem
    create in another test (its `_meta` still empty, sized after its payload) makes it raise
    `cannot mmap an empty file`: listed again, a few times, before that is reported."""
    for attempt in range(20):
        try:
            listed = pyshmem.list_streams()
            break
        except (ValueError, OSError) as e:
            if attempt == 19:
                raise RuntimeError(f"pyshmem.list_streams kept failing (a leftover empty _meta? "
                                   f"`shmstream purge` removes it): {e}") from e
            time.sleep(0.01)
    say("list " + json.dumps(listed))


def cmd_stat(name):
    try:
        st = pyshmem.stat(name)
    except FileNotFoundError:
        say("stat missing")
        return
    say("stat " + json.dumps(st))


def cmd_open(name):
    """Reports whether the stream opens, and if so reads it."""
    try:
        s = pyshmem.open(name)
    except FileNotFoundError:
        say("open missing")
        return
    try:
        v = s.read()
        say(f"open ok {v.reshape(-1)[0]}")
    except Exception as exc:  # report the class: the Rust side checks it
        say(f"open error {type(exc).__name__}")
    s.close()


def cmd_open_refused(name):
    """Opens `name`: says "opened", or "refused <class>: <message>"."""
    try:
        s = pyshmem.open(name)
    except Exception as exc:
        say(f"refused {type(exc).__name__}: {exc}")
        return
    say("opened")
    s.close()


def cmd_unlink(name):
    pyshmem.unlink(name)
    say("unlinked")


def cmd_read_error(name):
    """Reads once and reports the exception class (or 'none' and the first value)."""
    s = pyshmem.open(name, readonly=True)
    try:
        v = s.read(timeout=10)
        say(f"error none {v.reshape(-1)[0]}")
    except Exception as exc:
        say(f"error {type(exc).__name__}")
    s.close()


def cmd_abort_write(name):
    """A write_view whose body raises: pyshmem aborts the generation."""
    s = pyshmem.open(name)
    try:
        with s.write_view() as view:
            view[...] = -1
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    say("aborted")
    s.close()


def cmd_create_unlink_loop(name, n):
    """Creates and unlinks `name` n times (pyshmem sizes `_meta` after creating it)."""
    for _ in range(int(n)):
        s = pyshmem.create(name, shape=(4,), dtype=np.uint8)
        s.close()
        pyshmem.unlink(name)
    say("looped")


def cmd_create_slowly(name):
    """Creates `name` as pyshmem does, with its header's initialization held after `_meta`
    exists (as a large payload's zero fill or a GPU stream's CUDA setup holds it), saying
    "creating" then, until 'go'; says "created" when done, and holds the stream until 'go'."""
    init = pyshmem._shared._MetadataView.__init__

    def slow(self, buffer, *, initialize=False):
        if initialize:
            wait_go("creating")
        init(self, buffer, initialize=initialize)

    pyshmem._shared._MetadataView.__init__ = slow
    s = pyshmem.create(name, shape=(4,), dtype=np.uint8)
    say("created")
    wait_go()
    s.close()


def cmd_create_stalled(name, window):
    """Creates `name` as pyshmem does, stopped until 'go' inside one of the steps that
    write its header in place under the name's lock, saying "stalled" there: `window`
    "instance_id" (`_MetadataView.set_instance_id` stores the id, then its flag) or "crc"
    (`_finalize_header_crc` sets the CRC flag, stores 0, then calls `_header_crc`). Says
    "created" when done, and holds the stream until 'go'."""
    shared = pyshmem._shared
    if window == "instance_id":
        def set_instance_id(self, value):
            self._v3["instance_id"] = value
            wait_go("stalled")
            self._v3["flags"] = self._flags() | shared.METADATA_FLAG_INSTANCE_ID

        shared._MetadataView.set_instance_id = set_instance_id
    elif window == "crc":
        header_crc = shared._header_crc

        def first_header_crc(buf):
            shared._header_crc = header_crc
            wait_go("stalled")
            return header_crc(buf)

        shared._header_crc = first_header_crc
    else:
        raise SystemExit(f"unknown window {window!r}")
    s = pyshmem.create(name, shape=(4,), dtype=np.uint8)
    say("created")
    wait_go()
    s.close()


def cmd_create_failing(name):
    """Starts creating `name` as pyshmem does, saying "creating" inside the header's
    initialization, and fails there on 'go' (as a GPU stream's CUDA setup can): pyshmem
    removes the segments it made. Says "failed"."""
    init = pyshmem._shared._MetadataView.__init__

    def failing(self, buffer, *, initialize=False):
        if initialize:
            wait_go("creating")
            raise RuntimeError("the creation fails here")
        init(self, buffer, initialize=initialize)

    pyshmem._shared._MetadataView.__init__ = failing
    try:
        pyshmem.create(name, shape=(4,), dtype=np.uint8)
    except RuntimeError:
        say("failed")


COMMANDS = {
    "create_write": cmd_create_write,
    "read_dump": cmd_read_dump,
    "increment": cmd_increment,
    "read_new_parked": cmd_read_new_parked,
    "write_on_go": cmd_write_on_go,
    "write_bool_mask_on_go": cmd_write_bool_mask_on_go,
    "list": cmd_list,
    "stat": cmd_stat,
    "open": cmd_open,
    "open_refused": cmd_open_refused,
    "unlink": cmd_unlink,
    "read_error": cmd_read_error,
    "abort_write": cmd_abort_write,
    "create_unlink_loop": cmd_create_unlink_loop,
    "write_n": cmd_write_n,
    "create_slowly": cmd_create_slowly,
    "create_failing": cmd_create_failing,
    "create_stalled": cmd_create_stalled,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: peer.py {{{','.join(COMMANDS)}}} args... (pid {os.getpid()})")
    COMMANDS[sys.argv[1]](*sys.argv[2:])
