"""
C{memcachier-admin node snapshot} refuses clearly when it cannot ask a
node for a snapshot: warm restart off, no pidfile, no such process, no
snapshot in time.  (The whole round trip, with a real node, is in
C{tests/integration/test_warm_restart.py}.)
"""

import io
import os
import subprocess
import sys

from memcachier.admin import main


def _run(tmp_path, config, *argv):
    path = tmp_path / "memcachier.toml"
    path.write_text(config + f'\n[database]\nurl = "sqlite:///{tmp_path / "db.sqlite"}"\n')
    out, err = io.StringIO(), io.StringIO()
    code = main([f"--config={path}", "node", "snapshot", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_warmRestartOff(tmp_path):
    """
    Without a state_dir, or with warm_restart = false, there is nothing
    to ask for.
    """
    code, _, err = _run(tmp_path, "")
    assert code == 1 and "warm restart is off" in err
    code, _, err = _run(tmp_path, f'[node]\nstate_dir = "{tmp_path}"\nwarm_restart = false\n')
    assert code == 1 and "warm restart is off" in err


def test_noPidfile(tmp_path):
    """
    A pidfile that cannot be read is named in the error.
    """
    code, _, err = _run(tmp_path, f'[node]\nstate_dir = "{tmp_path}"\n',
                        f"--pidfile={tmp_path / 'missing.pid'}")
    assert code == 1 and "missing.pid" in err


def test_noProcess(tmp_path):
    """
    A pid that names no process says the node is not running.
    """
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    pidfile = tmp_path / "node.pid"
    pidfile.write_text(finished.stdout)
    code, _, err = _run(tmp_path, f'[node]\nstate_dir = "{tmp_path}"\n', f"--pidfile={pidfile}")
    assert code == 1 and "is the node running?" in err


def test_noSnapshotInTime(tmp_path):
    """
    A process that ignores SIGUSR1 (here, one that is no node) writes no
    snapshot: the command gives up after its timeout.
    """
    pidfile = tmp_path / "node.pid"
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert sleeper.stdout.readline().strip() == "ready"
        pidfile.write_text(f"{sleeper.pid}\n")
        code, _, err = _run(tmp_path, f'[node]\nstate_dir = "{tmp_path}"\n',
                            f"--pidfile={pidfile}", "--timeout=0.2")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert code == 1 and "no snapshot in" in err
    assert not os.path.exists(tmp_path / "snapshot.manual")
