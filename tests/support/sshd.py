"""Real OpenSSH servers on testbed hosts, for tests of what goes over ssh.

`SshSite` holds the test's throwaway keys under a directory of its own: one
client key (root logs in with it), one host key per server, and the
known_hosts file that lists them, so the client checks host keys for real
(StrictHostKeyChecking=yes). `SshSite.serve(host)` starts Debian's sshd in a
testbed host's network namespace, with a mount namespace of its own whose
/run is a private tmpfs (sshd needs /run/sshd; and what a session puts under
/run stays on that "host", as on a real node). Nothing reads the machine's
own ssh configuration or keys.
"""

import os
import shutil
import signal
import socket
import subprocess

from tools.dev.netns import wait_until

SSHD = "/usr/sbin/sshd"
SSH_PORT = 22


def missing():
    """Why sshd tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd)"
    if not os.path.exists(SSHD):
        return f"{SSHD} missing (apt-get install openssh-server)"
    for tool, pkg in (("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"),
                      ("scp", "openssh-client"), ("unshare", "util-linux"),
                      ("nsenter", "util-linux")):
        if not shutil.which(tool):
            return f"{tool} missing (apt-get install {pkg})"
    return None


def _keygen(path, comment):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True, capture_output=True, timeout=60)


class SshSite:
    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.client_key = os.path.join(directory, "id_ed25519")
        self.authorized_keys = os.path.join(directory, "authorized_keys")
        self.known_hosts = os.path.join(directory, "known_hosts")
        _keygen(self.client_key, "nfsp-test-client")
        shutil.copyfile(self.client_key + ".pub", self.authorized_keys)
        os.chmod(self.authorized_keys, 0o600)
        open(self.known_hosts, "w").close()
        self.servers = []

    def client_options(self):
        """ssh options for a client of these servers: this key only, these
        host keys only, no configuration or agent of the machine's."""
        return {"config": "/dev/null", "identity": self.client_key,
                "options": [f"UserKnownHostsFile={self.known_hosts}",
                            "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes",
                            "IdentitiesOnly=yes", "IdentityAgent=none"]}

    def serve(self, host, timeout=30):
        server = Sshd(self, host)
        self.servers.append(server)
        server.start(timeout)
        return server

    def stop(self):
        for s in self.servers:
            s.stop()


class Sshd:
    def __init__(self, site, host):
        self.site = site
        self.host = host
        self.dir = os.path.join(site.dir, host.role)
        self.host_key = os.path.join(self.dir, "ssh_host_ed25519_key")
        self.config = os.path.join(self.dir, "sshd_config")
        self.log_path = os.path.join(self.dir, "sshd.log")
        self.proc = None

    def start(self, timeout):
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        _keygen(self.host_key, f"nfsp-test-{self.host.role}")
        with open(self.host_key + ".pub") as f:
            kind, key = f.read().split()[:2]
        with open(self.site.known_hosts, "a") as f:
            f.write(f"{self.host.ip} {kind} {key}\n")
        with open(self.config, "w") as f:
            f.write(f"""# written by tests/support/sshd.py
ListenAddress {self.host.ip}
Port {SSH_PORT}
HostKey {self.host_key}
PidFile none
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {self.site.authorized_keys}
# The test's files live under /tmp, which is world-writable: StrictModes would refuse them.
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
# scp speaks SFTP since OpenSSH 9.0
Subsystem sftp internal-sftp
""")
        script = ("mount -t tmpfs -o mode=0755 nfsp-test-run /run && mkdir -m 0755 /run/sshd "
                  f"&& exec {SSHD} -D -e -f {self.config}")
        with open(self.log_path, "ab") as log:
            self.proc = self.host.popen(["unshare", "--mount", "--propagation", "private",
                                         "sh", "-c", script],
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT)

        def listening():
            with socket.create_connection((self.host.ip, SSH_PORT), timeout=1):
                return True
        wait_until(lambda: self.host.inside(listening), timeout, what=f"sshd on {self.host}",
                   abort=lambda: self.proc.poll() is not None
                   and f"sshd on {self.host} exited:\n{self.log()}")
        return self

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self, timeout=10):
        if self.proc is None or self.proc.poll() is not None:
            return
        # The listener only: sessions are separate sshd processes, and what
        # they started (the iods) is the test's to stop, through the product.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
