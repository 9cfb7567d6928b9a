"""
What the benchmark entries share to run servers as operators do: a
C{twistd -n memcachier} process on a configuration file, started and
waited for until it answers C{version}.
"""

import os
import socket
import subprocess
import sys
import time


def freePort():
    """
    A TCP port on 127.0.0.1 free at the time of asking.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable(name):
    """
    The path of console script C{name} of this Python's environment.
    """
    return os.path.join(os.path.dirname(sys.executable), name)


def startNode(config, directory, logPath, port, timeout=60):
    """
    Start C{twistd -n memcachier --config=CONFIG} in C{directory}, its
    output to C{logPath}, and wait until it answers C{version} on C{port}.

    @return: the L{subprocess.Popen}.
    @raise RuntimeError: it exited, or did not answer within C{timeout}
        seconds (with its log).
    """
    with open(logPath, "wb") as log:
        process = subprocess.Popen(
            [executable("twistd"), "-n", "--pidfile=", "--logfile=-", "memcachier",
             f"--config={config}"],
            cwd=directory, stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"node exited with {process.returncode}: {_read(logPath)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"version\r\n")
                if s.recv(100).startswith(b"VERSION"):
                    return process
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"node on {port} did not answer: {_read(logPath)}")


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")
