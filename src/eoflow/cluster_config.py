"""The ``cluster`` section of a run config, and a checker for the recipes under ``cluster/``.

The section says where the Dask graphs run::

    cluster:
      kind: local            # local (default) | address | slurm | pbs | kubernetes
      address: null          # kind address: tcp://HOST:PORT of a running scheduler
      n_workers: null        # local / slurm / pbs / kubernetes: workers (jobs x processes)
      threads_per_worker: null
      memory_limit: auto     # per worker
      dashboard_address: 127.0.0.1:0
      batch_tiles: null      # tiles computing at once (default: one per worker thread)
      recipe: null           # slurm / pbs: cluster/jobqueue/<kind>.yaml, kubernetes: the manifest

:func:`validate_recipes` parses every YAML recipe (and the command lines of
``cluster/processes/README.md``) and checks each key against what the installed library versions
accept: Dask's and distributed's own config defaults, the ``distributed`` scheduler / worker
command-line parsers, ``dask-jobqueue``'s ``jobqueue.yaml`` (or the documented key list below when
it is not installed), ``LocalCluster``'s signature for the JupyterLab factory, and the documented
schema of the dask-kubernetes operator's ``DaskCluster`` resource.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eoflow.errors import ConfigError

__all__ = [
    "JOBQUEUE_KEYS",
    "ClusterSection",
    "jobqueue_kwargs",
    "parse_cluster_section",
    "validate_recipes",
]

#: Keys of ``jobqueue.slurm`` / ``jobqueue.pbs`` in dask-jobqueue 0.9.0's ``jobqueue.yaml``, used
#: when dask-jobqueue is not installed (``pip install "eoflow[cluster]"`` installs it).
JOBQUEUE_KEYS: dict[str, frozenset[str]] = {
    "slurm": frozenset(
        [
            "name",
            "cores",
            "memory",
            "processes",
            "python",
            "interface",
            "death-timeout",
            "local-directory",
            "shared-temp-directory",
            "extra",
            "worker-command",
            "worker-extra-args",
            "shebang",
            "queue",
            "account",
            "walltime",
            "env-extra",
            "job-script-prologue",
            "job-cpu",
            "job-mem",
            "job-extra",
            "job-extra-directives",
            "job-directives-skip",
            "log-directory",
            "scheduler-options",
        ]
    ),
    "pbs": frozenset(
        [
            "name",
            "cores",
            "memory",
            "processes",
            "python",
            "interface",
            "death-timeout",
            "local-directory",
            "shared-temp-directory",
            "extra",
            "worker-command",
            "worker-extra-args",
            "shebang",
            "queue",
            "account",
            "walltime",
            "env-extra",
            "resource-spec",
            "job-script-prologue",
            "job-extra",
            "job-extra-directives",
            "job-directives-skip",
            "log-directory",
            "scheduler-options",
        ]
    ),
}
#: Keys of dask-labextension's ``labextension`` config (its ``labextension.yaml``).
LABEXTENSION_KEYS: dict[str, frozenset[str]] = {
    "labextension": frozenset({"factory", "default", "initial"}),
    "factory": frozenset({"module", "class", "args", "kwargs"}),
    "default": frozenset({"workers", "adapt"}),
}
#: The dask-kubernetes operator's ``DaskCluster`` (``kubernetes.dask.org/v1``) schema, as
#: documented (https://kubernetes.dask.org/en/latest/operator_resources.html).
DASKCLUSTER_KEYS: dict[str, frozenset[str]] = {
    "top": frozenset({"apiVersion", "kind", "metadata", "spec"}),
    "spec": frozenset({"worker", "scheduler", "idleTimeout"}),
    "worker": frozenset({"replicas", "spec"}),
    "scheduler": frozenset({"spec", "service"}),
    "container": frozenset(
        [
            "name",
            "image",
            "imagePullPolicy",
            "args",
            "command",
            "env",
            "envFrom",
            "resources",
            "ports",
            "readinessProbe",
            "livenessProbe",
            "startupProbe",
            "volumeMounts",
            "workingDir",
            "securityContext",
        ]
    ),
}
_CLUSTER_ROOT = Path(__file__).resolve().parents[2] / "cluster"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSection(_Model):
    """Where the Dask graphs run (the ``cluster`` section of a run config)."""

    kind: Literal["local", "address", "slurm", "pbs", "kubernetes"] = Field(
        "local", description="local LocalCluster (default), an existing scheduler, or a launcher"
    )
    address: str | None = Field(None, description="kind address: tcp://HOST:PORT")
    n_workers: int | None = Field(None, ge=1, description="workers (default: sized to machine)")
    threads_per_worker: int | None = Field(None, ge=1)
    memory_limit: str = Field("auto", description="per worker, e.g. 4GiB")
    dashboard_address: str = Field("127.0.0.1:0", description="bind address of the dashboard")
    batch_tiles: int | None = Field(
        None, ge=1, description="tiles computing at once (default: one per worker thread)"
    )
    recipe: str | None = Field(None, description="slurm/pbs: jobqueue YAML; kubernetes: manifest")
    timeout_s: float = Field(20.0, gt=0, description="how long to wait for the scheduler")

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "kind" not in data and data.get("address"):
            return {**data, "kind": "address"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSection:
        if self.kind == "address":
            if not self.address:
                raise ValueError("kind 'address' needs 'address: tcp://HOST:PORT'")
            if not re.match(r"^(tcp|tls|inproc|ws|wss|ucx)://[^\s:]+(:\d+)?$", self.address):
                raise ValueError(f"address {self.address!r} is not like tcp://HOST:PORT")
        elif self.address:
            raise ValueError(f"'address' only goes with kind 'address' (kind is {self.kind!r})")
        if self.recipe and self.kind not in ("slurm", "pbs", "kubernetes"):
            raise ValueError(f"'recipe' only goes with slurm, pbs or kubernetes (not {self.kind})")
        return self

    def recipe_path(self) -> Path | None:
        """The recipe file for launcher kinds (default: the one shipped under ``cluster/``)."""
        if self.recipe:
            return Path(self.recipe)
        default = {
            "slurm": "jobqueue/slurm.yaml",
            "pbs": "jobqueue/pbs.yaml",
            "kubernetes": "kubernetes/daskcluster.yaml",
        }.get(self.kind)
        return _CLUSTER_ROOT / default if default else None


def parse_cluster_section(data: Mapping[str, Any] | None) -> ClusterSection:
    """Validate a ``cluster`` mapping; errors become one-line :class:`ConfigError`.

    Parameters
    ----------
    data
        The section as loaded from YAML (None -> all defaults: a LocalCluster).

    Returns
    -------
    ClusterSection
    """
    try:
        return ClusterSection.model_validate(dict(data or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "cluster"
        raise ConfigError(
            f"config key cluster.{where}: {first['msg']}".replace("cluster.cluster", "cluster"),
            "see cluster/README.md for the cluster section",
        ) from exc


def jobqueue_kwargs(section: ClusterSection) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` / ``PBSCluster`` from the recipe.

    Dashed YAML keys become underscored arguments; ``n_workers`` and ``memory_limit`` of the
    section are not passed (jobs are scaled with ``cluster.scale(n_workers)``).
    """
    if section.kind not in ("slurm", "pbs"):
        raise ConfigError(
            f"cluster.kind {section.kind!r} is not a jobqueue kind", "use slurm or pbs"
        )
    path = section.recipe_path()
    doc = _load_yaml(path)
    try:
        options = doc["jobqueue"][section.kind]
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"recipe {path} has no 'jobqueue.{section.kind}' section",
            f"start from cluster/jobqueue/{section.kind}.yaml",
        ) from exc
    return {k.replace("-", "_"): v for k, v in options.items() if v is not None}


# --- recipe validation -------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"recipe {path} cannot be read: {exc}", "fix its YAML") from exc


def _canon(key: str) -> str:
    return str(key).replace("_", "-")


def _walk(d: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for k, v in d.items():
        path = (*prefix, _canon(k))
        yield path, v
        if isinstance(v, Mapping):
            yield from _walk(v, path)


def _dask_defaults() -> dict:
    """Dask's and distributed's default config trees (the keys they know)."""
    import dask
    import distributed

    tree: dict = {}
    for mod, name in ((dask, "dask.yaml"), (distributed, "distributed.yaml")):
        tree.update(yaml.safe_load((Path(mod.__file__).parent / name).read_text()))
    return tree


def _unknown_key(keys: tuple[str, ...], defaults: Mapping) -> str | None:
    """The first prefix of ``keys`` that ``defaults`` does not know, or None."""
    node: Any = defaults
    for i, k in enumerate(keys):
        if not isinstance(node, Mapping) or (not node and i > 0):
            return None  # a leaf or a free-form mapping (e.g. worker resources)
        canon = {_canon(kk): vv for kk, vv in node.items()}
        if k not in canon:
            return ".".join(keys[: i + 1])
        node = canon[k]
    return None


def _check_dask_config(doc: Mapping, path: Path) -> list[str]:
    defaults = _dask_defaults()
    bad = {_unknown_key(keys, defaults) for keys, _ in _walk(doc)} - {None}
    return [f"{path}: unknown Dask config key {k}" for k in sorted(bad)]


def _jobqueue_keys(kind: str) -> frozenset[str]:
    try:
        import dask_jobqueue
    except ImportError:
        return JOBQUEUE_KEYS[kind]
    shipped = yaml.safe_load((Path(dask_jobqueue.__file__).parent / "jobqueue.yaml").read_text())
    return frozenset(shipped["jobqueue"][kind])


def _check_jobqueue(doc: Mapping, path: Path) -> list[str]:
    import distributed

    problems = []
    sched_params = set(inspect.signature(distributed.Scheduler.__init__).parameters) - {"self"}
    for kind, options in doc["jobqueue"].items():
        if kind not in JOBQUEUE_KEYS:
            problems.append(f"{path}: jobqueue.{kind} is not a recipe eoflow ships (slurm, pbs)")
            continue
        known = _jobqueue_keys(kind)
        for key in options or {}:
            if _canon(key) not in known:
                problems.append(f"{path}: unknown dask-jobqueue key jobqueue.{kind}.{key}")
        for need in ("cores", "memory"):
            if not (options or {}).get(need):
                problems.append(f"{path}: jobqueue.{kind}.{need} must be set")
        for key in (options or {}).get("scheduler-options") or {}:
            if key not in sched_params:
                problems.append(f"{path}: scheduler-options.{key} is not a Scheduler argument")
    return problems


def _check_labextension(doc: Mapping, path: Path) -> list[str]:
    import distributed

    problems = []
    lab = doc["labextension"] or {}
    for section, keys in (("labextension", lab), *((k, lab.get(k) or {}) for k in lab)):
        allowed = LABEXTENSION_KEYS.get(section)
        if allowed is None or not isinstance(keys, Mapping):
            continue
        problems += [f"{path}: unknown key {section}.{k}" for k in keys if k not in allowed]
    factory = lab.get("factory") or {}
    if (factory.get("module"), factory.get("class")) == ("dask.distributed", "LocalCluster"):
        accepted = set(inspect.signature(distributed.LocalCluster.__init__).parameters)
        accepted |= set(inspect.signature(distributed.Nanny.__init__).parameters)
        for key in factory.get("kwargs") or {}:
            if key not in accepted:
                problems.append(f"{path}: LocalCluster does not accept {key!r}")
    return problems


def _check_container(c: Mapping, where: str, path: Path) -> list[str]:
    problems = [
        f"{path}: unknown container key {where}.{k}"
        for k in c
        if k not in DASKCLUSTER_KEYS["container"]
    ]
    problems += [f"{path}: {where} needs {k!r}" for k in ("name", "image") if k not in c]
    return problems


def _check_daskcluster(doc: Mapping, path: Path) -> list[str]:
    problems = [f"{path}: unknown key {k}" for k in doc if k not in DASKCLUSTER_KEYS["top"]]
    if doc.get("apiVersion") != "kubernetes.dask.org/v1":
        problems.append(f"{path}: apiVersion must be kubernetes.dask.org/v1")
    if not (doc.get("metadata") or {}).get("name"):
        problems.append(f"{path}: metadata.name is missing")
    spec = doc.get("spec") or {}
    problems += [f"{path}: unknown key spec.{k}" for k in spec if k not in DASKCLUSTER_KEYS["spec"]]
    for part in ("worker", "scheduler"):
        node = spec.get(part)
        if not isinstance(node, Mapping):
            problems.append(f"{path}: spec.{part} is missing")
            continue
        problems += [
            f"{path}: unknown key spec.{part}.{k}" for k in node if k not in DASKCLUSTER_KEYS[part]
        ]
        containers = (node.get("spec") or {}).get("containers") or []
        if not containers:
            problems.append(f"{path}: spec.{part}.spec.containers is empty")
        for i, c in enumerate(containers):
            problems += _check_container(c, f"spec.{part}.spec.containers[{i}]", path)
    service = (spec.get("scheduler") or {}).get("service") or {}
    if service.get("type", "ClusterIP") != "ClusterIP":
        problems.append(
            f"{path}: the scheduler service is {service.get('type')!r}; keep it ClusterIP "
            "(reach the dashboard with kubectl port-forward on 127.0.0.1)"
        )
    return problems


_DASK_LINE = re.compile(r"^\s*(?:\$\s*)?(dask (?:scheduler|worker)\b.*)$")


def _check_processes_readme(path: Path) -> list[str]:
    """Parse each ``dask scheduler`` / ``dask worker`` line with distributed's own CLI parser."""
    import click
    from distributed.cli import dask_scheduler, dask_worker

    problems, n = [], 0
    in_code = False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        m = _DASK_LINE.match(line) if in_code else None
        if not m:
            continue
        n += 1
        words = shlex.split(os.path.expandvars(m.group(1).split(" #")[0]))
        command = dask_scheduler.main if words[1] == "scheduler" else dask_worker.main
        try:
            command.make_context(" ".join(words[:2]), words[2:])
        except click.ClickException as exc:
            problems.append(f"{path}: `{' '.join(words)}`: {exc.format_message()}")
    if n == 0:
        problems.append(f"{path}: no `dask scheduler` / `dask worker` command found")
    return problems


def _check_file(path: Path) -> list[str]:
    if path.suffix == ".md":
        return _check_processes_readme(path)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    problems = []
    for doc in docs:
        if not isinstance(doc, Mapping):
            problems.append(f"{path}: not a YAML mapping")
        elif doc.get("kind") == "DaskCluster":
            problems += _check_daskcluster(doc, path)
        elif "jobqueue" in doc:
            problems += _check_jobqueue(doc, path)
        elif "labextension" in doc:
            problems += _check_labextension(doc, path)
        elif "cluster" in doc and len(doc) == 1:
            try:
                parse_cluster_section(doc["cluster"])
            except ConfigError as exc:
                problems.append(f"{path}: {exc.one_line()}")
        elif path.name.startswith("helm-values"):
            continue  # values for a Helm chart: checked by `helm lint`, not here
        else:
            problems += _check_dask_config(doc, path)
    return problems


def validate_recipes(root: str | Path | None = None) -> list[Path]:
    """Check every recipe under ``root`` (default: the repository's ``cluster/``).

    YAML files are recognised by content: a ``DaskCluster`` manifest, a ``jobqueue`` config, a
    ``labextension`` config, an eoflow ``cluster`` section, else a Dask config file; the
    ``processes/README.md`` command lines are parsed with distributed's CLI.

    Returns
    -------
    list of Path
        The files checked.

    Raises
    ------
    ConfigError
        Listing every problem found (unknown keys, missing required keys, bad commands).
    """
    root = Path(root) if root is not None else _CLUSTER_ROOT
    if not root.is_dir():
        raise ConfigError(f"recipe folder {root} does not exist", "point at the cluster/ folder")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml"))
    files += sorted(root.glob("processes/*.md"))
    problems = []
    for path in files:
        try:
            problems += _check_file(path)
        except yaml.YAMLError as exc:
            problems.append(f"{path}: YAML does not parse: {' '.join(str(exc).split())}")
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) in the cluster recipes: " + "; ".join(problems),
            "fix the keys named (they are checked against the installed library versions)",
        )
    return files
