"""docker-compose.yml's three-node example (issue 16) is well formed: `docker compose
config` accepts it where docker compose is installed; everywhere its YAML is checked for
what makes the three nodes one cluster (distinct names, each listing the other two as
peers at their service names, one shared secret mounted with mode 0600, its own volume,
distinct host ports). Whether it runs depends on the machine (docker, free ports)."""
import os
import shutil
import subprocess

import pytest

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.ours_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
NODES = ("node1", "node2", "node3")


def flag(command, name):
    return command[command.index(name) + 1]


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed here (the YAML checks below still run)")
    secret = os.path.join(ROOT, "cluster.secret")
    made = not os.path.exists(secret)
    if made:
        with open(secret, "w") as f:
            f.write("test")
    try:
        out = subprocess.run([docker, "compose", "-f", COMPOSE, "--profile", "cluster", "config", "-q"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    finally:
        if made:
            os.unlink(secret)


def test_the_three_node_example_is_one_cluster():
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    services = doc["services"]
    assert services["broker"].get("profiles") is None, "plain `docker compose up` keeps its single broker"
    names, host_ports, volumes = {}, set(), set()
    for s in NODES:
        svc = services[s]
        assert svc["profiles"] == ["cluster"] and svc["hostname"] == s and svc["build"] == "."
        cmd = svc["command"]
        names[s] = flag(cmd, "--node-name")
        assert flag(cmd, "--cluster-secret-file") == "/run/secrets/cluster.secret"
        (secret,) = svc["secrets"]
        assert secret == {"source": "cluster_secret", "target": "/run/secrets/cluster.secret", "mode": 0o600}
        host_ports |= {p.split(":")[0] for p in svc["ports"]}
        (vol,) = svc["volumes"]
        volumes.add(vol.split(":")[0])
        assert vol.endswith(":/data") and vol.split(":")[0] in doc["volumes"]
        assert svc["environment"]["BROKER_HTTP_LISTEN"] == "0.0.0.0:15672"
    assert len(set(names.values())) == 3 and len(host_ports) == 6 and len(volumes) == 3
    for s in NODES:
        peers = flag(services[s]["command"], "--cluster-peers").split(",")
        want = sorted(f"{names[o]}@{o}:25672" for o in NODES if o != s)
        assert sorted(peers) == want
    assert doc["secrets"]["cluster_secret"] == {"file": "./cluster.secret"}
