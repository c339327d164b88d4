"""The seccomp filter of sandbox workers, as a raw classic-BPF program (what bubblewrap's
``--seccomp FD`` loads). It refuses the system calls that reach past the sandbox's namespaces
or around its accounting, as Docker's and Flatpak's default profiles do:

- kernel keyrings (``add_key``, ``request_key``, ``keyctl``): keys are kept per uid, not per
  namespace, so they would outlive a call and be shared by every worker of the same uid;
- ``memfd_create``/``memfd_secret``: memory no process's resident size shows, so the memory
  watch (a daemon not run as root has no memory cgroup) could not see it;
- new namespaces (``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*`` flag; ``clone3``,
  whose flags a filter cannot read, answers ENOSYS so the C library falls back to ``clone``);
- ``io_uring_*``, ``userfaultfd``, ``perf_event_open``, ``bpf``, ``syslog``: kernel attack
  surface no tool needs;
- file watches (``inotify_init1``, ``inotify_add_watch``, ``fanotify_init``,
  ``fanotify_mark``; fanotify's inode marks are allowed unprivileged): a watch on an inode
  sees every process that opens it, and the sandbox's files are read-only binds of the
  host's (the interpreter, the daemon's package), so user code saw which modules other
  sessions' calls (and the host's processes) imported, and when;
- ``socket`` of any family but ``AF_UNIX``, ``AF_INET``, ``AF_INET6`` and ``AF_NETLINK``
  with ``NETLINK_ROUTE`` (which the network namespace confines; the C library's
  ``getaddrinfo`` and ``getifaddrs`` use it): ``AF_VSOCK`` is not network-namespaced, so a
  worker in a virtual machine could reach the hypervisor's (or, on a host, its guests')
  vsock services; ``NETLINK_KOBJECT_UEVENT`` carried the host's device events into a root
  daemon's workers (their network namespace belongs to the host's user namespace); the
  others are kernel surface no tool needs;
- ``fcntl`` with ``F_NOTIFY`` (dnotify: the same as a file watch, directory by directory)
  or ``F_SETLEASE`` (a daemon not run as root may own the files bound into the sandbox: a
  lease on one held up whoever opened it next, the daemon's own imports too, for up to
  45 s);
- every system call of another ABI (32-bit ``int 0x80`` on x86_64, x32);
- changing the priority, scheduling, CPU affinity, I/O priority or resource limits of any
  process but the caller (``setpriority``, ``sched_set*``, ``ioprio_set`` and ``prlimit64``
  with a pid, a process group or a user): user code runs as the same uid as the worker's
  zygote and forker, which the kernel lets it lower for good, and every later call on that
  worker (another session's) inherited them from the forker (SCHED_IDLE, nice 19, a tiny
  RLIMIT_AS...).

Refused calls fail with EPERM (ENOSYS for clone3 and other ABIs); nothing is killed.
Only msgspec and the standard library: the filter is built in the daemon.
"""

from __future__ import annotations

import platform
import struct

# struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }
_INSN = struct.Struct("=HBBI")
_LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_JA = 0x05  # BPF_JMP | BPF_JA: always, k instructions ahead
_RET = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
# struct seccomp_data: nr at 0, arch at 4, args[0] (low 32 bits, little-endian) at 16.
_NR, _ARCH, _ARG0 = 0, 4, 16
_CLONE_NEW = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

# name -> (x86_64, aarch64)
_DENIED = {
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "memfd_create": (319, 279),
    "memfd_secret": (447, 447),
    "unshare": (272, 97),
    "setns": (308, 268),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "userfaultfd": (323, 282),
    "perf_event_open": (298, 241),
    "bpf": (321, 280),
    "syslog": (103, 116),
    # File watches: an inode's watch sees every process that opens it, and the sandbox's view
    # is read-only binds of the host's files (the interpreter, the daemon's package): the
    # host's processes and other sessions' workers (which modules a call imports, and when).
    "inotify_init1": (294, 26),
    "inotify_add_watch": (254, 27),
    "fanotify_init": (300, 262),
    "fanotify_mark": (301, 263),
}
# name -> ((x86_64, aarch64), (the arguments that must be 0)): the caller itself
# (PRIO_PROCESS is 0; IOPRIO_WHO_PROCESS is 1, checked apart); any other target is refused.
_SELF_ONLY = {
    "setpriority": ((141, 140), (0, 1)),  # which, who
    "sched_setparam": ((142, 118), (0,)),
    "sched_setscheduler": ((144, 119), (0,)),
    "sched_setaffinity": ((203, 122), (0,)),
    "sched_setattr": ((314, 274), (0,)),
    "prlimit64": ((302, 261), (0,)),
    "ioprio_set": ((251, 30), (1,)),  # who (which must be IOPRIO_WHO_PROCESS)
}
_IOPRIO_SET = _SELF_ONLY["ioprio_set"][0]
_CLONE = (56, 220)
_CLONE3 = (435, 435)
_SOCKET = (41, 198)
_FCNTL = (72, 25)
# fcntl commands refused: F_NOTIFY (dnotify: a signal whenever any process reads, writes or
# creates a file in a directory, the read-only binds of the host's included) and F_SETLEASE
# (a lease on a file user code owns, as a daemon not run as root's may own the interpreter
# and the package the daemon runs: any other opener, the daemon too, waits for it up to
# lease-break-time, 45 s by default).
_FCNTL_REFUSED = (1026, 1024)
# The socket families user code may create (AF_UNIX, AF_INET, AF_INET6), and AF_NETLINK with
# the one protocol it may use (NETLINK_ROUTE; args[2] of socket()).
SOCKET_FAMILIES = (1, 2, 10)
_AF_NETLINK, _NETLINK_ROUTE = 16, 0
_ARCHES = {"x86_64": (0xC000003E, 0), "amd64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1), "arm64": (0xC00000B7, 1)}

DENIED = sorted(_DENIED)


def supported() -> bool:
    return platform.machine().lower() in _ARCHES


def program() -> bytes:
    """The filter for this machine's architecture (``supported()`` must be true)."""
    arch, column = _ARCHES[platform.machine().lower()]
    denied = [nrs[column] for nrs in _DENIED.values()]
    insns: list[tuple[int, int, int, int]] = []
    # Jumps go to the returns at the end; their offsets are filled in once the length is known.
    to_eperm: list[int] = []
    to_enosys: list[int] = []

    def emit(code: int, k: int) -> int:
        insns.append((code, 0, 0, k))
        return len(insns) - 1

    to_enosys.append(emit(_LD_ABS_W, _ARCH) + 1)
    emit(_JEQ, arch)  # jt: 1 (over the return below) - set after layout
    enosys_now = emit(_RET, _ERRNO | _ENOSYS)
    emit(_LD_ABS_W, _NR)
    if column == 0:  # x86_64: the x32 ABI sets bit 30 of the number
        to_enosys.append(emit(_JGE, 0x40000000))
    for nr in denied:
        to_eperm.append(emit(_JEQ, nr))
    to_enosys.append(emit(_JEQ, _CLONE3[column]))
    to_self_only = [(emit(_JEQ, nrs[column]), name) for name, (nrs, _) in _SELF_ONLY.items()]
    is_fcntl = emit(_JEQ, _FCNTL[column])
    is_socket = emit(_JEQ, _SOCKET[column])
    not_clone = emit(_JEQ, _CLONE[column])
    emit(_LD_ABS_W, _ARG0)
    clone_flags = emit(_JSET, _CLONE_NEW)
    socket_family = emit(_LD_ABS_W, _ARG0)
    to_allow = [emit(_JEQ, family) for family in SOCKET_FAMILIES]
    netlink = emit(_JEQ, _AF_NETLINK)  # any other family: refused
    emit(_LD_ABS_W, _ARG0 + 16)  # the protocol
    netlink_route = emit(_JEQ, _NETLINK_ROUTE)
    # A self-only call: each of its argument words (low 32 bits: pids and these selectors are
    # ints) must be 0, or it is refused.
    self_only_at: dict[str, int] = {}
    to_eperm_unless: list[int] = []
    to_allow_after: list[int] = []
    for name, (nrs, words) in _SELF_ONLY.items():
        self_only_at[name] = len(insns)
        if nrs == _IOPRIO_SET:
            emit(_LD_ABS_W, _ARG0)
            to_eperm_unless.append(emit(_JEQ, 1))  # which: IOPRIO_WHO_PROCESS
        for word in words:
            emit(_LD_ABS_W, _ARG0 + 8 * word)
            to_eperm_unless.append(emit(_JEQ, 0))
        to_allow_after.append(emit(_JA, 0))
    fcntl_at = len(insns)  # fcntl: its command (args[1]) must not be a refused one
    emit(_LD_ABS_W, _ARG0 + 8)
    to_eperm.extend(emit(_JEQ, cmd) for cmd in _FCNTL_REFUSED)
    to_allow_after.append(emit(_JA, 0))
    allow = emit(_RET, _ALLOW)
    eperm = emit(_RET, _ERRNO | _EPERM)
    enosys = emit(_RET, _ERRNO | _ENOSYS)

    def jump(at: int, target: int) -> int:
        offset = target - (at + 1)
        assert 0 <= offset < 256
        return offset

    out = list(insns)
    arch_check = to_enosys.pop(0)  # the JEQ on the architecture
    out[arch_check] = (_JEQ, jump(arch_check, enosys_now + 1), 0, arch)
    for at in to_enosys:
        code, _, _, k = out[at]
        out[at] = (code, jump(at, enosys), 0, k)
    for at in to_eperm:
        code, _, _, k = out[at]
        out[at] = (code, jump(at, eperm), 0, k)
    out[not_clone] = (_JEQ, 0, jump(not_clone, allow), _CLONE[column])
    out[is_socket] = (_JEQ, jump(is_socket, socket_family), 0, _SOCKET[column])
    out[is_fcntl] = (_JEQ, jump(is_fcntl, fcntl_at), 0, _FCNTL[column])
    out[clone_flags] = (_JSET, jump(clone_flags, eperm), jump(clone_flags, allow), _CLONE_NEW)
    for at in to_allow:
        out[at] = (_JEQ, jump(at, allow), 0, out[at][3])
    out[netlink] = (_JEQ, 0, jump(netlink, eperm), _AF_NETLINK)
    out[netlink_route] = (_JEQ, jump(netlink_route, allow), jump(netlink_route, eperm), _NETLINK_ROUTE)
    for at, name in to_self_only:
        out[at] = (_JEQ, jump(at, self_only_at[name]), 0, out[at][3])
    for at in to_eperm_unless:
        out[at] = (_JEQ, 0, jump(at, eperm), out[at][3])
    for at in to_allow_after:
        out[at] = (_JA, 0, 0, jump(at, allow))
    return b"".join(_INSN.pack(*insn) for insn in out)
