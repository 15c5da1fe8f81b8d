"""A container's first program: run by the node agent inside the container's new mount
namespace (`unshare --mount`), it binds the container's mounts, then execs its command.

    python -I -S mountns.py '{"mounts": [[source, target, readOnly], ...], "cwd": DIR}' ARGV...

Every source is opened before the first mount, and bound from its descriptor
(/proc/self/fd/N) rather than by name: a mount can hide the path of a later source (a pod's
emptyDir at /tmp hides a checkout under /tmp, which holds the pod's volume directories), but
not a descriptor that is already open. The sources are opened here, inside the namespace,
because mount(2) refuses a source that belongs to another mount namespace.

Standalone (no package imports) and standard library only, all imported up front: once the
mounts are made, this interpreter's own files may be hidden too."""
import ctypes
import json
import os
import signal
import stat
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 1, 2, 4, 32, 4096
KEPT_FLAGS = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC  # the same bits as their MS_ flags
MOUNT_FAILED, NOT_FOUND, NOT_EXECUTABLE = 32, 127, 126  # as mount(8) and sh report them
libc = ctypes.CDLL(None, use_errno=True)


def mount(source, target: str, flags: int, fstype=None, options=None):
    if libc.mount(source, target.encode(), fstype, flags, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def make_target(target: str, is_dir: bool):
    """A bind mount needs an existing target of the source's kind (made on the host)."""
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "ab").close()


def bind_all(mounts: list):
    """Binds [source, target, readOnly] in order (parents first): all sources opened first.
    [None, target, readOnly, options] mounts a tmpfs (a memory emptyDir) there instead."""
    fds = [os.open(m[0], os.O_PATH | os.O_CLOEXEC) if m[0] is not None else None for m in mounts]
    for fd, (_, target, read_only, *options) in zip(fds, mounts):
        if fd is None:
            make_target(target, True)
            mount(b"tmpfs", target, MS_NOSUID | MS_NODEV, b"tmpfs", (options[0] if options else "").encode() or None)
            continue
        make_target(target, stat.S_ISDIR(os.fstat(fd).st_mode))
        mount(f"/proc/self/fd/{fd}".encode(), target, MS_BIND)
        if read_only:  # keeping the source's nosuid/nodev/noexec, as mount(8) does
            kept = os.statvfs(target).f_flag & KEPT_FLAGS
            mount(None, target, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)
        os.close(fd)


def main():
    plan, argv = json.loads(sys.argv[1]), sys.argv[2:]
    try:
        bind_all(plan["mounts"])
        os.makedirs(plan["cwd"], exist_ok=True)
        os.chdir(plan["cwd"])
    except OSError as e:
        print(f"kubetune-container: mount: {e}", file=sys.stderr)
        sys.exit(MOUNT_FAILED)
    # Python ignores these at startup, and an ignored signal stays ignored across exec.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"kubetune-container: exec: {argv[0]}: {e.strerror}", file=sys.stderr)
        sys.exit(NOT_FOUND if isinstance(e, FileNotFoundError) else NOT_EXECUTABLE)


if __name__ == "__main__":
    main()
