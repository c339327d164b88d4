"""A sandbox worker: ``python -I -m llmgine_daemon.sandbox.worker CONFIG_JSON``.

The process the pool starts is a small "zygote" that never runs user code itself. At boot it
moves the protocol pipes off fds 0/1 (so user code writing to fd 1 or 2 reaches /dev/null, not
the protocol), joins its cgroup, sets resource limits, imports what calls need, and says Ready.
For every Run it forks a child; the child compiles and runs the user code, talks to the daemon
over the same pipes (bus requests), writes Done and exits. The zygote waits for the child,
kills anything it left behind and reports Exited. So every call starts from the same clean
state (one session's code cannot leave traps in builtins for another's), and a crash costs
one child, not the worker. What runs in the child is ``child.py``; this module is the zygote
and the forker.

Only msgspec and the standard library may be imported here (and the sandbox's own modules,
which obey the same rule).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

from llmgine_daemon.sandbox import frames
from llmgine_daemon.sandbox.child import (
    EXECUTION_FAILED,
    WORKER_CRASHED,
    call_error,
    child_main,
    set_dumpable,
)
from llmgine_daemon.sandbox.cleanup import ipc_left, wipe
from llmgine_daemon.sandbox.confine import drop_identity, set_limits

# -- the zygote -----------------------------------------------------------------------------


def _describe_status(status: int) -> tuple[str, bool]:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {name}", False
    return f"exit status {code}", code == 0


class _Outbox:
    """Bytes for a non-blocking descriptor: written as far as it takes them, the rest kept (up
    to ``cap``: past it the writer is flooding and the call is stopped)."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        self.data = bytearray()
        self.broken = False

    def put(self, frame: frames.Frame) -> bool:
        """False when the outbox is over its cap (the frame is still queued)."""
        self.data += frames.encode(frame)
        self.flush()
        return len(self.data) <= self.cap

    def flush(self) -> None:
        while self.data and not self.broken:
            try:
                written = os.write(self.fd, self.data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.broken = True
                self.data.clear()
                return
            del self.data[:written]

    def drain(self) -> None:
        """Write everything, blocking (between calls: the pool reads its pipe)."""
        os.set_blocking(self.fd, True)
        try:
            self.flush()
        finally:
            os.set_blocking(self.fd, False)


class _Channel:
    """The zygote's end of one call's socket: frames in, frames out, never blocking."""

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.sock = sock
        self.max_frame = max_frame
        self.inbox = bytearray()
        self.out = _Outbox(sock.fileno(), 1 << 30)  # the pool's replies: bounded by the pool
        self.closed = False

    def receive(self) -> list[frames.Frame]:
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        self.inbox += data
        out: list[frames.Frame] = []
        while len(self.inbox) >= frames.HEADER.size:
            (size,) = frames.HEADER.unpack_from(self.inbox)
            if size > self.max_frame:
                raise frames.FrameError(f"a frame of {size} bytes is over the limit")
            end = frames.HEADER.size + size
            if len(self.inbox) < end:
                break
            out.append(frames.decode(bytes(self.inbox[frames.HEADER.size : end])))
            del self.inbox[:end]
        return out


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_except(skip: set[int]) -> int:
    """Resident bytes of every process in our PID namespace but ``skip`` (the zygote and the
    forker): the call's whole process tree, however it forked. Cheap, but pages that forked
    processes share are counted once per process."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in skip:
            try:
                with open(f"/proc/{entry}/statm") as fh:
                    total += int(fh.read().split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return total * _PAGE


def _pss_except(skip: set[int]) -> int:
    """The same, with shared pages divided among their processes (PSS): what the call really
    holds. Dearer to read: asked only when the resident sum is over the limit."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in skip:
            try:
                with open(f"/proc/{entry}/smaps_rollup") as fh:
                    for line in fh:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except (OSError, ValueError, IndexError):
                pass
    return total


def _over(skip: set[int], limit: int) -> bool:
    return _rss_except(skip) > limit and _pss_except(skip) > limit


def _kill_everything(pid: int, namespace: bool) -> bool:
    """Kill whatever the call left running (user code may fork) and collect the zombies;
    False if something survived (the worker is then retired). Run by the forker, a subreaper:
    orphans of the call are its children."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(500):
        if namespace:
            # In our own PID namespace, -1 reaches every process but us and PID 1 (the
            # zygote), including any that left the child's process group with setsid().
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if done == 0:
                break
        if not namespace:
            return True  # no namespace: what left the group is the pool's to kill
        select.select([], [], [], 0.002)
    return False


_REPORT = struct.Struct(">iB")  # the child's wait status, whether everything else is gone
_PID = struct.Struct(">i")  # the forker to the zygote: the pid of the call's child
_PEERCRED = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid


def _listen() -> tuple[socket.socket, bytes]:
    """Where each call's child connects to the zygote: an abstract Unix address (in the
    sandbox's own network namespace; random, for isolation "none"). The child connects by name
    rather than being handed a socket: descriptors in flight over Unix sockets are counted per
    uid, every worker runs as the same uid, and past the sender's RLIMIT_NOFILE the kernel
    refuses to pass one (ETOOMANYREFS): user code that kept a few hundred in flight stopped
    every other worker from starting a call."""
    address = b"\0llmgine-call-" + os.urandom(8).hex().encode()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(16)
    listener.setblocking(False)
    return listener, address


def _forker(ctrl: socket.socket, workdir: str, address: bytes, namespace: bool) -> None:
    """The process every call's child is forked from: started at boot, before the worker has
    handled any call, and never given a call's data, so a child's copy of its memory holds
    nothing of other sessions. Asked for a child (one byte), it forks one, which connects to
    the zygote's ``address``, tells the zygote its pid, waits for the child, kills what it left
    and reports. Never returns."""
    set_dumpable(False)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    while True:
        try:
            if not ctrl.recv(1):
                os._exit(0)
        except OSError:
            os._exit(0)
        pid = os.fork()
        if pid == 0:
            try:
                ctrl.close()
                os.chdir(workdir)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(address)
                channel = sock.detach()
                run = frames.read_frame(channel, 1 << 30)
            except BaseException:  # noqa: BLE001
                os._exit(70)
            if not isinstance(run, frames.Run):
                os._exit(70)
            child_main(run, channel)
        ctrl.sendall(_PID.pack(pid))
        _, status = os.waitpid(pid, 0)
        gone = _kill_everything(pid, namespace)
        ctrl.sendall(_REPORT.pack(status, 1 if gone else 0))


class _Zygote:
    """PID 1 of the sandbox: relays frames between the pool and each call's child, watches the
    call's memory, and cleans up after it. It handles every call's data, so it never forks a
    call: the forker does (see ``_forker``)."""

    def __init__(self, pool_r: int, pool_w: int, config: dict[str, Any]) -> None:
        self.pool_r = pool_r
        self.pool = _Outbox(pool_w, 8 << 20)
        os.set_blocking(pool_w, False)
        self.sandboxed = bool(config.get("sandboxed"))
        self.memory = int(config["limits"].get("memory_bytes", 0))
        self.workdir = os.getcwd() if self.sandboxed else os.path.join(os.getcwd(), "call")
        if not self.sandboxed:
            os.makedirs(self.workdir, 0o700, exist_ok=True)
        self.listener, address = _listen()
        self.ctrl, theirs = socket.socketpair()
        self.forker = os.fork()
        if self.forker == 0:
            self.ctrl.close()
            self.listener.close()
            os.close(pool_r)
            os.close(pool_w)
            _forker(theirs, self.workdir, address, namespace=os.getpid() != 1 and os.getppid() == 1)
        theirs.close()

    def serve(self) -> None:
        while True:
            self.pool.drain()
            try:
                run = frames.read_frame(self.pool_r)
            except EOFError:
                return
            if isinstance(run, frames.BusReply):
                # The answer to a request of a call that ended without waiting for it (user
                # code can write its Done right after a request): nobody's. Ending here cost
                # the worker, and the next call on it (another session's) crashed.
                continue
            if not isinstance(run, frames.Run):
                return
            if self.call(run):
                self.pool.drain()
                return  # the pool replaces a worker that ends

    def _write(self, frame: frames.Frame) -> bool:
        return self.pool.put(frame)

    def call(self, run: frames.Run) -> bool:
        """One call in a fresh child of the forker; True if this worker must not serve
        another call."""
        try:
            self._drop_pending()
            self.ctrl.sendall(b"f")
            (pid,) = _PID.unpack(self.ctrl.recv(_PID.size, socket.MSG_WAITALL))
            sock = self._accept(pid)
        except (OSError, struct.error):
            sock = None
        if sock is None:  # the forker is gone, or the child died before it connected
            self._write(
                frames.Done(
                    run.call_id,
                    ok=False,
                    error=call_error(WORKER_CRASHED, "the sandbox could not start the call: its forker is gone"),
                )
            )
            self._write(frames.Exited(run.call_id, "lost", False, True))
            return True
        sock.setblocking(False)
        self._write(frames.Started(run.call_id, pid))
        channel = _Channel(sock, run.max_result + 4 * run.max_output + 65536)
        channel.out.put(run)
        failure, report = self.relay(run, pid, channel)
        sock.close()
        if report is None:  # the forker died (user code may kill it): nothing left is trusted
            self._kill_all_but_self()
            if failure is None:
                failure = call_error(WORKER_CRASHED, "the sandbox's forker was killed during the call")
            status, gone = None, False
        else:
            status, gone = report
        if failure:
            self._write(frames.Done(run.call_id, ok=False, error=failure))
        description, clean = _describe_status(status) if status is not None else ("killed", False)
        dirty = report is None or not gone or not wipe(self.workdir) or (self.sandboxed and ipc_left())
        self._write(frames.Exited(run.call_id, description, clean, dirty))
        return dirty

    def _drop_pending(self) -> None:
        """Close the connections waiting on the listener: a call's processes may have
        connected too (they are all gone now; no process but the forker is left)."""
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # BlockingIOError: nothing more
                return
            conn.close()

    def _accept(self, pid: int) -> socket.socket | None:
        """The connection of the call's child (``pid``, checked with SO_PEERCRED), or None if
        the forker reported first (the child died before it connected) or is gone."""
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        poller.register(self.ctrl, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self.ctrl.fileno():
                    return None
                try:
                    conn, _ = self.listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
                if _PEERCRED.unpack(creds)[0] == pid:
                    return conn
                conn.close()

    def _kill_all_but_self(self) -> None:
        if os.getpid() == 1:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def relay(
        self, run: frames.Run, pid: int, channel: _Channel
    ) -> tuple[dict[str, Any] | None, tuple[int, bool] | None]:
        """Pass the child's frames to the pool (checked: only bus requests, logs and one Done
        for this call) and the pool's replies back, until the forker reports the child gone.
        Returns the failure to report (None: the child's own Done was passed on, or it died
        without one) and the forker's report (None if the forker is gone)."""
        poller = select.poll()
        poller.register(self.pool_r, select.POLLIN)
        poller.register(channel.sock, select.POLLIN)
        poller.register(self.ctrl, select.POLLIN)
        poller.register(self.pool.fd, 0)
        watching = self.sandboxed and self.memory > 0
        skip = {os.getpid(), self.forker}
        failure: dict[str, Any] | None = None
        stop_at: float | None = None  # when the child is killed if it has not exited
        finished = False  # Done passed on, or the call failed: nothing more goes to the pool

        def end(why: dict[str, Any] | None, grace: float) -> None:
            nonlocal failure, finished, stop_at
            if not finished:
                failure, finished = why, True
            if stop_at is None:
                stop_at = time.monotonic() + grace

        pool_gone = False

        def daemon_gone() -> None:
            # The daemon is gone (killed: its ends of the pipes closed). Nobody takes this
            # call's answer: stop it now; then this worker ends (serve reads EOF), and with it,
            # as the namespace's init, the rest. The pipes stay ready for ever once closed: no
            # longer polled (they spun this loop at 100% CPU until the call ended by itself).
            nonlocal pool_gone
            if not pool_gone:
                pool_gone = True
                poller.unregister(self.pool_r)
                poller.unregister(self.pool.fd)
                end(call_error(WORKER_CRASHED, "the daemon went away during the call"), 0.0)

        while True:
            if not pool_gone:
                poller.modify(self.pool.fd, select.POLLOUT if self.pool.data else 0)
            if not channel.closed:
                poller.modify(channel.sock, select.POLLIN | (select.POLLOUT if channel.out.data else 0))
            for fd, events in poller.poll(50):
                if fd == self.ctrl.fileno():
                    return self._finish(run, channel, failure, finished)
                if fd == self.pool.fd:
                    self.pool.flush()
                    if self.pool.broken or events & (select.POLLERR | select.POLLHUP):
                        daemon_gone()
                    continue
                if fd == self.pool_r:
                    if events & select.POLLIN:
                        reply = frames.read_frame(self.pool_r)
                        if isinstance(reply, frames.BusReply) and not channel.closed:
                            channel.out.put(reply)
                    elif events & (select.POLLHUP | select.POLLERR):
                        daemon_gone()
                    continue
                if events & select.POLLOUT:
                    channel.out.flush()
                if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    verdict = self._take(run, channel, finished)
                    if verdict is not None:
                        end(verdict or None, 0.2 if not verdict else 0.0)
                    if channel.closed:
                        poller.unregister(channel.sock)
            self.pool.flush()
            if len(self.pool.data) > self.pool.cap:
                end(
                    call_error(
                        WORKER_CRASHED,
                        "the call sent more than the sandbox passes on "
                        "while the daemon is busy (bus.log or forged frames)",
                    ),
                    0.0,
                )
            if watching and not finished and _over(skip, self.memory):
                limit = self.memory // 2**20
                end(
                    call_error(
                        EXECUTION_FAILED,
                        f"MemoryError: the call used more than {limit} MiB (sandbox.memory_mb), "
                        "counting every process it started; it was stopped",
                        type="MemoryError",
                        limit_mb=limit,
                    ),
                    0.0,
                )
            if stop_at is not None and time.monotonic() >= stop_at:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                stop_at = time.monotonic() + 1.0

    def _finish(
        self, run: frames.Run, channel: _Channel, failure: dict[str, Any] | None, finished: bool
    ) -> tuple[dict[str, Any] | None, tuple[int, bool] | None]:
        """The forker reported (or is gone): take the child's last frames, then its report."""
        while not finished and not channel.closed:
            before = len(channel.inbox)
            verdict = self._take(run, channel, finished)
            if verdict is not None:
                failure, finished = verdict or None, True
            if len(channel.inbox) == before:
                break
        try:
            data = self.ctrl.recv(_REPORT.size, socket.MSG_WAITALL)
        except OSError:
            data = b""
        if len(data) != _REPORT.size:
            return failure, None
        status, gone = _REPORT.unpack(data)
        return failure, (status, bool(gone))

    def _take(self, run: frames.Run, channel: _Channel, finished: bool) -> dict[str, Any] | None:
        """Pass on what the child sent. None: carry on; else the call is over (a Done frame,
        passed on, is an empty dict; a failure is the error to report)."""
        try:
            received = channel.receive()
        except frames.FrameError as exc:
            return call_error(WORKER_CRASHED, f"the call broke the sandbox protocol: {exc}")
        for frame in received:
            if finished:
                continue  # after its Done (or its failure) nothing of the call goes on
            if isinstance(frame, (frames.BusRequest, frames.Log)):
                self._write(frame)
            elif isinstance(frame, frames.Done) and frame.call_id == run.call_id:
                self._write(frame)
                return {}
            else:
                return call_error(
                    WORKER_CRASHED, f"the call broke the sandbox protocol: unexpected {type(frame).__name__} frame"
                )
        return None


def _clear_environment() -> None:
    """Empty the environment, and zero its strings where the kernel put them (the stack):
    clearing os.environ leaves them, /proc/self/environ reads them there, and every call's
    child is a fork of this memory (the configuration: the daemon's pid, the uid, limits)."""
    os.environ.clear()
    try:
        import ctypes

        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
        ctypes.memset(start, 0, end - start)
    except (OSError, ValueError, IndexError):
        pass


def main() -> None:
    config = json.loads(os.environ.get("LLMGINE_WORKER", "") or sys.argv[1])
    drop_identity(config.get("identity"))
    set_dumpable(False)
    # PID 1 of the sandbox: with the default action, signals from user code are not delivered.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    pool_r, pool_w = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    cgroup = config.get("cgroup") or ""
    if cgroup:  # isolation "none" as root: the worker joins its pids cgroup itself
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
                fh.write("0")
        except OSError:
            cgroup = ""
    set_limits(config["limits"])
    # Writing past FSIZE then raises OSError(EFBIG) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # The pool passes an empty environment; the interpreter may still add LC_CTYPE (PEP 538).
    _clear_environment()
    # Everything imported so far is shared with every child: keep the collector off those
    # pages so forked children do not copy them.
    gc.freeze()
    zygote = _Zygote(pool_r, pool_w, config)  # forks the forker: before any call's data
    zygote.pool.put(
        frames.Ready(
            pid=os.getpid(),
            uid=os.getuid(),
            pidns=os.getpid() == 1,
            cgroup=bool(cgroup),
            python=sys.version.split()[0],
        )
    )
    zygote.serve()


if __name__ == "__main__":
    main()
