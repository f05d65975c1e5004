"""Every recipe under cluster/ parses and uses only keys the installed libraries accept."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from eoflow.cluster_config import (
    ClusterSection,
    jobqueue_kwargs,
    parse_cluster_section,
    validate_recipes,
)
from eoflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def test_every_recipe_validates():
    files = {p.relative_to(CLUSTER).as_posix() for p in validate_recipes(CLUSTER)}
    assert {
        "local/dask.yaml", "local/labextension.yaml", "jobqueue/slurm.yaml", "jobqueue/pbs.yaml",
        "kubernetes/daskcluster.yaml", "processes/README.md", "examples/cluster-sections.yaml",
    } <= files  # fmt: skip


def test_broken_recipes_are_named(tmp_path):
    shutil.copytree(CLUSTER, tmp_path / "c")
    root = tmp_path / "c"
    slurm = yaml.safe_load((root / "jobqueue/slurm.yaml").read_text())
    slurm["jobqueue"]["slurm"]["cpus"] = 4
    (root / "jobqueue/slurm.yaml").write_text(yaml.safe_dump(slurm))
    (root / "local/dask.yaml").write_text("distributed:\n  worker:\n    memroy: {target: 0.5}\n")
    k8s = yaml.safe_load((root / "kubernetes/daskcluster.yaml").read_text())
    k8s["spec"]["scheduler"]["service"]["type"] = "LoadBalancer"
    (root / "kubernetes/daskcluster.yaml").write_text(yaml.safe_dump(k8s))
    readme = root / "processes/README.md"
    readme.write_text(readme.read_text().replace("--nthreads 2", "--n-threads 2", 1))
    with pytest.raises(ConfigError) as err:
        validate_recipes(root)
    msg = str(err.value)
    assert "4 problem(s)" in msg
    assert "jobqueue.slurm.cpus" in msg and "distributed.worker.memroy" in msg
    assert "LoadBalancer" in msg and "--n-threads" in msg


def test_cluster_sections():
    assert parse_cluster_section(None) == ClusterSection()
    assert ClusterSection().kind == "local" and ClusterSection().dashboard_address.startswith(
        "127.0.0.1"
    )
    assert parse_cluster_section({"address": "tcp://127.0.0.1:8786"}).kind == "address"
    for bad, word in (
        ({"kind": "address"}, "needs 'address"),
        ({"kind": "local", "address": "tcp://h:1"}, "only goes with kind 'address'"),
        ({"kind": "yarn"}, "cluster.kind"),
        ({"n_wrokers": 2}, "n_wrokers"),
    ):
        with pytest.raises(ConfigError, match=word):
            parse_cluster_section(bad)


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_recipe_builds_a_job_script(kind):
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    kwargs = jobqueue_kwargs(parse_cluster_section({"kind": kind}))
    kwargs["scheduler_options"] = {"dashboard_address": "127.0.0.1:0", "host": "127.0.0.1"}
    with cls(**kwargs) as cluster:
        script = cluster.job_script()
    assert "--lifetime 235m" in script and "--nworkers 2" in script
    assert ("#SBATCH" if kind == "slurm" else "#PBS") in script


def test_worker_env_pins_match_the_client():
    lines = (CLUSTER / "env/requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert {"dask", "distributed", "numpy", "xarray", "zarr"} <= set(pins)
    wrong = {n: (v, metadata.version(n)) for n, v in pins.items() if metadata.version(n) != v}
    assert not wrong, f"regenerate with cluster/env/freeze.py: {wrong}"
