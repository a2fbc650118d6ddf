"""The deployment definitions under deploy/ against the code they deploy.

Every YAML parses; every Databricks task and the SparkApplication run a jobs/*.py entry point whose
`allmtl` subcommand exists and whose arguments the CLI accepts; every `--config` they pass loads
with the `--set` overrides next to it; the images install the pinned stack; the scripts are valid
bash and compose the spark-submit commands they document; the user's guide names every file.
"""

from __future__ import annotations

import ast
import fcntl
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from allmtl_spark.cli import build_parser
from allmtl_spark.config import AppConfig, load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BUNDLE_ROOT = DEPLOY / "databricks"
IMAGE_ROOT = "/opt/allmtl/"  # the images copy conf/ and jobs/ here (Dockerfile.cpu)
REFERENCE = re.compile(r"\$\{([A-Za-z_][\w-]*(?:\.[\w-]+)+)\}")
DYNAMIC_VALUE = re.compile(r"\{\{\s*[\w.]+\s*\}\}")  # Databricks job parameters filled at run time
BUNDLE_NAMESPACES = ("var.", "bundle.", "workspace.", "resources.")
TARGETS = ("dev", "prod")
QUARTZ_FIELDS = 6  # seconds minutes hours day-of-month month day-of-week [year]
NOT_DEPLOYED_JOBS = {
    "synth",  # writes a synthetic data set on one machine: no cluster job for it
    "tune",  # run by hand (or in `allmtl evaluate` with evaluate.nested_tuning) before a training job
}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def makefile_var(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)\s*$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, f"Makefile has no {name}"
    return match.group(1)


@cache
def constraints() -> dict[str, str]:
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


@cache
def subcommands() -> frozenset[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]  # noqa: SLF001
    return frozenset(sub.choices)


def entry_command(job_file: Path) -> str:
    """The subcommand a jobs/*.py entry point runs: the first string of its ``main([...])`` call."""
    for node in ast.walk(ast.parse(job_file.read_text())):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "main"
            and node.args
            and isinstance(node.args[0], ast.List)
            and node.args[0].elts
            and isinstance(node.args[0].elts[0], ast.Constant)
        ):
            return node.args[0].elts[0].value
    raise AssertionError(f"{rel(job_file)} has no main(['<command>', ...]) call")


def parse_cli(command: str, arguments: list[str], where: str):
    """argparse's namespace for ``allmtl <command> <arguments>``, failing with argparse's message."""
    assert command in subcommands(), f"{where}: `allmtl {command}` is not a registered subcommand"
    parser = build_parser()
    try:
        return parser.parse_args([command, *arguments])
    except SystemExit:
        pytest.fail(f"{where}: `allmtl {command}` rejects the arguments {arguments}")


def load_invocation(namespace, config_path: Path, where: str) -> AppConfig:
    assert config_path.is_file(), f"{where}: --config {namespace.config} -> {config_path} does not exist"
    try:
        return load_config(config_path, namespace.overrides)
    except Exception as err:  # ConfigError, or a bad YAML value
        pytest.fail(f"{where}: {rel(config_path)} with {namespace.overrides} does not validate: {err}")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    out = []
    for text in joined:
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_args(instructions) -> dict[str, str]:
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args.setdefault(name, value)
    return args


def expand_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


def pip_commands(instructions) -> list[str]:
    """Each ``pip install`` / ``pip wheel`` command of the RUN instructions."""
    commands = []
    for word, rest in instructions:
        if word != "RUN":
            continue
        for part in re.split(r"&&|;", rest):
            if re.search(r"\bpip (install|wheel)\b", part):
                commands.append(part.strip())
    return commands


def run_script(script: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


# ---------------------------------------------------------------------------------------------
# The Databricks bundle
# ---------------------------------------------------------------------------------------------


@cache
def bundle() -> tuple[dict, dict[Path, dict]]:
    """(databricks.yml, {file: parsed}) for databricks.yml and every file its `include` globs match."""
    root = yaml.safe_load((BUNDLE_ROOT / "databricks.yml").read_text())
    files = [BUNDLE_ROOT / "databricks.yml"]
    for pattern in root.get("include", []):
        files += sorted(BUNDLE_ROOT.glob(pattern))
    return root, {f: yaml.safe_load(f.read_text()) for f in files}


def bundle_jobs() -> list[tuple[Path, str, dict]]:
    _, files = bundle()
    return [
        (f, key, job)
        for f, data in files.items()
        for key, job in ((data or {}).get("resources", {}).get("jobs") or {}).items()
    ]


def bundle_tasks() -> list[tuple[Path, str, dict, dict]]:
    return [(f, key, task, job) for f, key, job in bundle_jobs() for task in job.get("tasks", [])]


def variables(target: str) -> dict:
    root, _ = bundle()
    values = {name: (spec or {}).get("default") for name, spec in root.get("variables", {}).items()}
    values.update(root["targets"][target].get("variables") or {})
    return values


def resolve(value, target: str):
    """Substitute the bundle's ${...} references the way `databricks bundle deploy -t target` would.

    ${workspace.file_path} is the synced repo root (sync.paths: ../..), so it maps to REPO here.
    """
    root, _ = bundle()
    known = {"bundle.target": target, "bundle.name": root["bundle"]["name"], "workspace.file_path": str(REPO)}
    known.update({f"var.{k}": v for k, v in variables(target).items()})
    if isinstance(value, dict):
        return {k: resolve(v, target) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, target) for v in value]
    if not isinstance(value, str):
        return value
    whole = REFERENCE.fullmatch(value)
    if whole and whole.group(1) in known and not isinstance(known[whole.group(1)], str):
        return known[whole.group(1)]  # a number stays a number

    def substitute(match: re.Match) -> str:
        key = match.group(1)
        assert key in known, f"${{{key}}} is not resolvable in target {target}"
        return str(known[key])

    # Databricks fills dynamic value references such as {{job.run_id}} (a number) when a run starts
    return DYNAMIC_VALUE.sub("1234567890", REFERENCE.sub(substitute, value))


def task_id(item) -> str:
    f, job_key, task, _ = item
    return f"{f.name}:{job_key}.{task['task_key']}"


def job_cluster(job: dict, key: str) -> dict:
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job.get("job_clusters", [])}
    assert key in clusters, f"job cluster {key!r} is not defined in the job"
    return clusters[key]


def test_bundle_declares_name_include_artifact_and_targets():
    root, files = bundle()
    assert root["bundle"]["name"] == "allmtl_spark"
    assert root["include"] == ["resources/*.yml"]
    assert len(files) > 1, "include matches no resource files"
    assert [(BUNDLE_ROOT / p).resolve() for p in root["sync"]["paths"]] == [REPO], "sync must upload the repo root"
    artifact = root["artifacts"]["default"]
    assert artifact["type"] == "whl"
    assert (BUNDLE_ROOT / artifact["path"]).resolve() == REPO and (REPO / "pyproject.toml").is_file()
    assert "wheel" in artifact["build"] and "dist" in artifact["build"]
    targets = root["targets"]
    assert set(targets) == set(TARGETS)
    assert targets["dev"]["mode"] == "development" and targets["dev"]["default"] is True
    assert targets["prod"]["mode"] == "production" and not targets["prod"].get("default")
    dev, prod = variables("dev"), variables("prod")
    for name in ("catalog", "lakehouse_path", "models_path", "petastorm_cache_dir"):
        assert dev[name] != prod[name], f"prod must not share {name} with dev"
    assert dev["spark_version_gpu"].startswith("15.4.x-gpu-ml") and dev["spark_version_cpu"].startswith("15.4.x-cpu-ml")


@pytest.mark.parametrize("target", TARGETS)
def test_bundle_paths_live_in_the_targets_catalog_and_schema(target):
    values = variables(target)
    prefix = f"/Volumes/{values['catalog']}/{values['schema']}/"
    for name in ("lakehouse_path", "models_path", "raw_data_path"):
        assert values[name].startswith(prefix), f"{target}: {name}={values[name]} is outside {prefix}"


def test_bundle_references_are_declared_and_variables_used():
    root, files = bundle()
    declared = set(root["variables"])
    used = set()
    for path in files:
        for key in REFERENCE.findall(path.read_text()):
            assert key.startswith(BUNDLE_NAMESPACES), f"{path.name}: ${{{key}}} is not a bundle reference"
            if key.startswith("var."):
                used.add(key.removeprefix("var."))
    assert used - declared == set(), f"undeclared variables: {sorted(used - declared)}"
    assert declared - used == set(), f"variables nothing uses: {sorted(declared - used)}"


@pytest.mark.parametrize("item", bundle_tasks(), ids=task_id)
def test_bundle_task_runs_an_entry_point_with_arguments_the_cli_accepts(item):
    f, job_key, task, job = item
    where = task_id(item)
    python_task = task.get("spark_python_task")
    assert python_task, f"{where}: only spark_python_task tasks are expected"
    # Relative paths in a bundle file are relative to that file.
    job_file = (f.parent / python_task["python_file"]).resolve()
    assert job_file.is_file(), f"{where}: {python_task['python_file']} -> {job_file} does not exist"
    assert job_file.parent == REPO / "jobs", f"{where}: entry points live in jobs/"
    command = entry_command(job_file)
    wheels = [lib["whl"] for lib in task.get("libraries", []) if "whl" in lib]
    assert [(f.parent / w).resolve() for w in wheels] == [REPO / "dist" / "*.whl"], f"{where}: the wheel library"
    for target in TARGETS:
        namespace = parse_cli(command, resolve(python_task["parameters"], target), f"{where} [{target}]")
        assert namespace.config, f"{where}: no --config"
        cfg = load_invocation(namespace, Path(namespace.config), f"{where} [{target}]")
        assert cfg.spark.master is None, f"{where}: clusters need --set spark.master=null"
        assert cfg.lakehouse.path == variables(target)["lakehouse_path"], f"{where}: lakehouse.path"
        assert cfg.lakehouse.models_path == variables(target)["models_path"], f"{where}: lakehouse.models_path"


@pytest.mark.parametrize("item", bundle_tasks(), ids=task_id)
def test_bundle_task_clusters_exist_and_reference_synced_files(item):
    f, _, task, job = item
    where = task_id(item)
    cluster = job_cluster(job, task["job_cluster_key"])
    for target in TARGETS:
        resolved = resolve(cluster, target)
        assert re.fullmatch(r"15\.4\.x-(gpu|cpu)-ml-scala2\.12", resolved["spark_version"]), where
        assert resolved["data_security_mode"] == "SINGLE_USER", f"{where}: ML runtimes need single-user access"
        for script in resolved.get("init_scripts", []):
            destination = Path(script["workspace"]["destination"])
            assert destination.is_file(), f"{where}: init script {destination} is not in the repo"
        constraints_file = resolved.get("spark_env_vars", {}).get("ALLMTL_CONSTRAINTS")
        if constraints_file:
            assert Path(constraints_file) == DEPLOY / "constraints.txt", where


def test_gpu_jobs_run_one_horovod_rank_per_gpu_worker():
    checked = 0
    for f, _, task, job in bundle_tasks():
        command = entry_command((f.parent / task["spark_python_task"]["python_file"]).resolve())
        if command not in ("train", "evaluate"):
            continue
        for target in TARGETS:
            cluster = resolve(job_cluster(job, task["job_cluster_key"]), target)
            assert "-gpu-ml-" in cluster["spark_version"], f"{command} runs on the GPU runtime"
            assert cluster["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
            assert [s["workspace"]["destination"] for s in cluster["init_scripts"]] == [
                str(BUNDLE_ROOT / "init" / "horovod_nccl.sh")
            ]
            namespace = parse_cli(command, resolve(task["spark_python_task"]["parameters"], target), command)
            cfg = load_config(namespace.config, namespace.overrides)
            assert cfg.train.num_proc == cluster["num_workers"], f"{command} [{target}]: num_proc != GPU workers"
            checked += 1
    assert checked >= 2, "the bundle has no train/evaluate task on GPUs"


@pytest.mark.parametrize("item", bundle_tasks(), ids=task_id)
def test_bundle_tasks_use_unity_catalog_tables_tracking_and_the_registry(item):
    f, _, task, job = item
    where = task_id(item)
    for target in TARGETS:
        values = variables(target)
        namespace = parse_cli(
            entry_command((f.parent / task["spark_python_task"]["python_file"]).resolve()),
            resolve(task["spark_python_task"]["parameters"], target),
            where,
        )
        cfg = load_config(namespace.config, namespace.overrides)
        assert (cfg.lakehouse.catalog, cfg.lakehouse.schema) == (values["catalog"], values["schema"]), where
        assert cfg.lakehouse.mlflow_tracking_uri == "databricks" and cfg.tracking.experiment.startswith("/"), where
        assert cfg.tracking.experiment == values["experiment"], where
        assert cfg.registry.name == f"{values['catalog']}.{values['schema']}.{values['registry_prefix']}", where
        libraries = resolve(task["libraries"], target)
        requirements = [Path(lib["requirements"]) for lib in libraries if "requirements" in lib]
        assert requirements == [BUNDLE_ROOT / "requirements.txt"], f"{where}: the constrained requirements"
        cluster = resolve(job_cluster(job, task["job_cluster_key"]), target)
        if cluster.get("init_scripts"):
            cache = cluster["spark_env_vars"]["ALLMTL_HOROVOD_WHEEL_CACHE"]
            assert cache == values["wheel_cache_path"] and cache.startswith(f"/Volumes/{values['catalog']}/"), where


def test_the_bundles_requirements_install_the_verified_pins_and_no_spark():
    lines = [line.strip() for line in (BUNDLE_ROOT / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    assert (
        lines[0] == "-c ../constraints.txt"
        and (BUNDLE_ROOT / lines[0].split()[1]).resolve() == DEPLOY / "constraints.txt"
    )
    names = lines[1:]
    assert names and all(name in constraints() for name in names), "each requirement has a verified pin"
    assert {"pyspark", "delta-spark", "petastorm", "tensorflow-cpu"}.isdisjoint(names)


def test_the_nightly_job_scores_with_the_registered_alias_on_a_production_config():
    (item,) = [i for i in bundle_tasks() if i[2]["spark_python_task"]["python_file"].endswith("score_archive.py")]
    f, _, task, _ = item
    for target in TARGETS:
        values = variables(target)
        namespace = parse_cli("score", resolve(task["spark_python_task"]["parameters"], target), "score")
        assert Path(namespace.config) == REPO / "conf" / "databricks.yaml"
        cfg = load_config(namespace.config, namespace.overrides)
        prefix = f"{values['catalog']}.{values['schema']}.{values['registry_prefix']}"
        assert cfg.score.model == f"models:/{prefix}_{cfg.score.task}_{cfg.score.approach}@{values['model_alias']}"
        assert cfg.registry.alias == values["model_alias"]
        assert cfg.privacy.allow_demo_key is False and cfg.privacy.patient_key is None
        assert cfg.tracking.required is True
        assert cfg.score.slides_per_partition >= 4 and cfg.spark.shuffle_partitions >= 32, "cluster-sized"


def quartz_is_valid(expression: str) -> bool:
    fields = expression.split()
    if len(fields) not in (QUARTZ_FIELDS, QUARTZ_FIELDS + 1) or not re.fullmatch(r"\d{1,2}", fields[0]):
        return False
    day_of_month, day_of_week = fields[3], fields[5]
    return (day_of_month == "?") != (day_of_week == "?")  # Quartz: exactly one of them is "?"


def test_every_cluster_job_file_is_deployed_on_databricks():
    deployed = {(f.parent / t["spark_python_task"]["python_file"]).resolve().stem for f, _, t, _ in bundle_tasks()}
    jobs = {p.stem for p in (REPO / "jobs").glob("*.py")}
    assert jobs - NOT_DEPLOYED_JOBS - deployed == set(), "jobs/*.py without a Databricks task"


def test_nightly_scoring_job_is_scheduled_retried_and_bounded():
    assert (REPO / "jobs" / "score_archive.py").is_file()
    scoring = [
        (f, key, task, job)
        for f, key, task, job in bundle_tasks()
        if task["spark_python_task"]["python_file"].endswith("jobs/score_archive.py")
    ]
    assert scoring, "no bundle job runs jobs/score_archive.py"
    for _, key, task, job in scoring:
        schedule = job["schedule"]
        assert quartz_is_valid(schedule["quartz_cron_expression"]), f"{key}: {schedule['quartz_cron_expression']}"
        assert schedule["timezone_id"], key
        assert task["max_retries"] >= 1 and task["min_retry_interval_millis"] > 0, key
        assert isinstance(task["retry_on_timeout"], bool), key
        assert job["timeout_seconds"] > 0 and job["max_concurrent_runs"] == 1, key
        assert job["email_notifications"]["on_failure"], key


def test_quartz_check_rejects_unix_cron():
    assert quartz_is_valid("0 0 2 * * ?")
    assert not quartz_is_valid("0 2 * * *")
    assert not quartz_is_valid("0 0 2 * * *")


# ---------------------------------------------------------------------------------------------
# Kubernetes (spark-on-k8s-operator)
# ---------------------------------------------------------------------------------------------


def k8s_specs() -> list[tuple[str, dict]]:
    specs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "SparkApplication":
                specs.append((f"{path.name}:{doc['metadata']['name']}", doc["spec"]))
            elif doc["kind"] == "ScheduledSparkApplication":
                specs.append((f"{path.name}:{doc['metadata']['name']}", doc["spec"]["template"]))
    return specs


def test_k8s_manifests_are_spark_operator_v1beta2():
    kinds = set()
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] == "sparkoperator.k8s.io/v1beta2", path.name
            kinds.add(doc["kind"])
    assert "SparkApplication" in kinds


@pytest.mark.parametrize(("name", "spec"), k8s_specs(), ids=[n for n, _ in k8s_specs()])
def test_spark_application_runs_an_image_job_with_valid_arguments(name, spec):
    assert spec["type"] == "Python" and spec["mode"] == "cluster", name
    assert spec["sparkVersion"] == constraints()["pyspark"], f"{name}: sparkVersion != the pyspark pin"
    main = spec["mainApplicationFile"]
    assert main.startswith(f"local://{IMAGE_ROOT}jobs/"), f"{name}: {main} is not a job inside the image"
    job_file = REPO / main.removeprefix(f"local://{IMAGE_ROOT}")
    assert job_file.is_file(), f"{name}: {main} maps to {rel(job_file)}, which does not exist"
    namespace = parse_cli(entry_command(job_file), spec["arguments"], name)
    assert namespace.config.startswith(IMAGE_ROOT), f"{name}: --config must be a file inside the image"
    cfg = load_invocation(namespace, REPO / namespace.config.removeprefix(IMAGE_ROOT), name)
    assert cfg.spark.master is None, f"{name}: --set spark.master=null"
    mounts = {m["mountPath"] for m in spec["driver"].get("volumeMounts", [])}
    assert any(cfg.lakehouse.path.startswith(m) for m in mounts), f"{name}: lakehouse.path is not on a mounted volume"
    version = makefile_var("DELTA_VERSION")
    assert sorted(spec["deps"]["jars"]) == [
        f"local://{IMAGE_ROOT}jars/delta-spark_2.12-{version}.jar",
        f"local://{IMAGE_ROOT}jars/delta-storage-{version}.jar",
    ], name
    assert spec["image"].split("/")[-1].split(":")[0] == "allmtl-spark-cpu", f"{name}: the CPU image"
    if job_file.name == "score_archive.py":  # a nightly job pins its model version
        assert cfg.score.model not in ("latest", ""), f"{name}: score.model must pin a model version"


def test_scheduled_application_runs_the_same_spec_nightly_without_overlap():
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs.setdefault(doc["kind"], []).append(doc)
    assert "ScheduledSparkApplication" in docs, "deploy/k8s has no nightly ScheduledSparkApplication"
    (single,), (scheduled,) = docs["SparkApplication"], docs["ScheduledSparkApplication"]
    assert scheduled["spec"]["template"] == single["spec"], "the scheduled template drifted from sparkapplication.yaml"
    assert len(scheduled["spec"]["schedule"].split()) == 5
    assert scheduled["spec"]["concurrencyPolicy"] == "Forbid"


# ---------------------------------------------------------------------------------------------
# Container images
# ---------------------------------------------------------------------------------------------


def from_images(path: Path) -> list[str]:
    instructions = dockerfile_instructions(path)
    args = dockerfile_args(instructions)
    return [expand_args(rest.split()[0], args) for word, rest in instructions if word == "FROM"]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfile_installs_everything_under_the_constraints(name):
    instructions = dockerfile_instructions(DEPLOY / "docker" / name)
    commands = pip_commands(instructions)
    assert commands, name
    for command in commands:
        if name == "Dockerfile.cpu":  # the hashed lock, or nothing beyond it (--no-deps)
            locked = re.search(r"--require-hashes .*-r \S*lock/(cpu|horovod)\.txt", command)
            assert locked or "--no-deps" in command, f"{name}: pip outside the lock: {command}"
        else:
            assert re.search(r"-c \S*constraints\.txt", command), f"{name}: pip without -c constraints: {command}"
    pins = constraints()
    for pkg, version in re.findall(r"([A-Za-z][\w.-]*)(?:\[[\w,-]+\])?==([\w.]+)", " ".join(commands)):
        if pkg.lower() in pins:
            assert version == pins[pkg.lower()], f"{name}: {pkg}=={version} but constraints pin {pins[pkg.lower()]}"
    text = " ".join(rest for _, rest in instructions)
    for needed in (
        "horovod[spark]==0.28.1" if name == "Dockerfile.gpu" else "lock/horovod.txt",
        "HOROVOD_WITH_TENSORFLOW=1",
        "HOROVOD_WITH_GLOO=1",
        "HOROVOD_WITHOUT_MPI=1",
        "openjdk-17-jre-headless",
        "check_pins.py deploy/constraints.txt",
        "python -m allmtl_spark.setup_check",
        "ALLMTL_JARS_DIR=/opt/allmtl/jars",
    ):
        assert needed in text, f"{name} lacks {needed}"
    copies = {tuple(rest.split()[-2:]) for word, rest in instructions if word == "COPY" and "--from" not in rest}
    assert ("conf/", f"{IMAGE_ROOT}conf/") in copies and ("jobs/", f"{IMAGE_ROOT}jobs/") in copies, name
    assert dockerfile_args(instructions)["DELTA_VERSION"] == makefile_var("DELTA_VERSION"), name


def test_cpu_image_is_the_reference_stack():
    path = DEPLOY / "docker" / "Dockerfile.cpu"
    assert from_images(path)[-1] == "python:3.11-slim-bookworm"
    commands = " ".join(pip_commands(dockerfile_instructions(path)))
    cpu_extra = re.search(r"^cpu = \[(.*)\]", (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert cpu_extra and cpu_extra.group(1).strip() == '"tensorflow-cpu==2.15.1"', "pyproject's cpu extra"
    assert "--require-hashes --no-deps -r deploy/lock/cpu.txt" in commands  # the lock `make setup` installs
    assert "--no-deps --no-build-isolation ." in commands
    text = path.read_text()
    assert "build-essential" in text and "cmake" in text


def test_gpu_image_builds_horovod_with_nccl_on_cuda_12_2():
    path = DEPLOY / "docker" / "Dockerfile.gpu"
    images = from_images(path)
    assert all(
        re.fullmatch(r"nvidia/cuda:12\.2\.\d+-cudnn8-(devel|runtime)-ubuntu22\.04", i) for i in (images[0], images[-1])
    ), images
    commands = " ".join(pip_commands(dockerfile_instructions(path)))
    assert "tensorflow[and-cuda]==2.15.1" in commands and '".[gpu,spark]"' in commands
    text = path.read_text()
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in text and "python3.11" in text and r"\[X\] NCCL" in text


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerignore_lets_every_copied_path_into_the_context(name):
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "docker" / f"{name}.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for word, rest in dockerfile_instructions(DEPLOY / "docker" / name):
        if word != "COPY" or "--from" in rest:
            continue
        sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
        for source in sources:
            source = source.rstrip("/")
            assert any(source == a or source.startswith(a + "/") for a in allowed), f"{name}: {source} is ignored"
            assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"


def test_delta_version_is_the_makefiles_everywhere_in_deploy():
    version = makefile_var("DELTA_VERSION")
    assert constraints()["delta-spark"] == version
    patterns = [
        r"delta-spark_2\.12[:-](\d+\.\d+\.\d+)",
        r"delta-storage[:-](\d+\.\d+\.\d+)",
        r"DELTA_VERSION\s*[:=]\s*(\d+\.\d+\.\d+)",
    ]
    naming = set()
    for path in deploy_files():
        text = path.read_text(errors="replace")
        for pattern in patterns:
            for match in re.findall(pattern, text):
                assert match == version, f"{rel(path)}: Delta {match}, Makefile {version}"
                naming.add(rel(path))
    expected = {"deploy/docker/Dockerfile.cpu", "deploy/docker/Dockerfile.gpu", "deploy/spark-submit/common.sh"}
    assert expected <= naming, f"no Delta version found in {sorted(expected - naming)}"


def test_check_pins_accepts_this_environment_and_names_a_wrong_pin(tmp_path):
    script = DEPLOY / "docker" / "check_pins.py"
    ok = subprocess.run(
        [sys.executable, str(script), str(DEPLOY / "constraints.txt")], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    wrong = tmp_path / "constraints.txt"
    wrong.write_text("# a comment\nnumpy==0.0.1\nnot-installed-package==1.0\n")
    bad = subprocess.run([sys.executable, str(script), str(wrong)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "numpy: pinned 0.0.1, installed" in bad.stderr
    assert "not-installed-package: pinned 1.0, not installed" in bad.stderr
    absent = subprocess.run(
        [sys.executable, str(script), str(wrong), "--absent-ok", "not_installed_package"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "not-installed-package" not in absent.stderr and absent.returncode == 1  # numpy is still wrong


def test_entrypoint_dispatches_driver_executor_and_other_commands(tmp_path):
    echo_args = '#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n'
    for folder, name in ((tmp_path / "spark" / "bin", "spark-submit"), (tmp_path / "java" / "bin", "java")):
        folder.mkdir(parents=True)
        (folder / name).write_text(echo_args)
        (folder / name).chmod(0o755)
    base = {"SPARK_HOME": str(tmp_path / "spark"), "JAVA_HOME": str(tmp_path / "java")}
    script = DEPLOY / "docker" / "spark-entrypoint.sh"
    driver = run_script(
        script,
        "driver",
        "--properties-file",
        "/p",
        "local:///opt/allmtl/jobs/x.py",
        env={**base, "SPARK_DRIVER_BIND_ADDRESS": "10.0.0.7"},
    )
    assert driver.stdout.split() == [
        "--conf",
        "spark.driver.bindAddress=10.0.0.7",
        "--deploy-mode",
        "client",
        "--properties-file",
        "/p",
        "local:///opt/allmtl/jobs/x.py",
    ], driver.stderr
    executor_env = {
        **base,
        "SPARK_JAVA_OPT_1": "-Db=2",
        "SPARK_JAVA_OPT_0": "-Da=1",
        "SPARK_JAVA_OPT_10": "-Dk=10",
        "SPARK_EXECUTOR_MEMORY": "2g",
        "SPARK_DRIVER_URL": "spark://d:1",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "app",
        "SPARK_EXECUTOR_POD_IP": "1.2.3.4",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "pod",
    }
    executor = run_script(script, "executor", env=executor_env).stdout.split()
    assert executor[:5] == ["-Da=1", "-Db=2", "-Dk=10", "-Xms2g", "-Xmx2g"]
    assert "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in executor
    assert executor[executor.index("--executor-id") + 1] == "3" and executor[-1] == "pod"
    assert run_script(script, "echo", "as", "given", env=base).stdout.strip() == "as given"


# ---------------------------------------------------------------------------------------------
# Shell scripts: Databricks init script, spark-submit wrappers, cron
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [p for p in deploy_files() if p.suffix == ".sh"], ids=rel)
def test_shell_script_passes_bash_n(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    if script.name != "common.sh":  # sourced, not run
        assert os.access(script, os.X_OK), f"{rel(script)} is not executable"
        assert script.read_text().startswith("#!"), f"{rel(script)} has no shebang"


def init_script(gpu: str, **extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "ALLMTL_INIT_PYTHON": sys.executable,
        "ALLMTL_INIT_DRY_RUN": "1",
        "ALLMTL_INIT_GPU": gpu,
        "ALLMTL_CONSTRAINTS": str(DEPLOY / "constraints.txt"),
        **extra,
    }
    return subprocess.Popen(
        ["bash", str(BUNDLE_ROOT / "init" / "horovod_nccl.sh")],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_init_script_keeps_a_fitting_build_and_plans_an_nccl_build_where_missing():
    """Dry runs against this venv (TF 2.15.1, horovod with Gloo, no NCCL): CPU fits, GPU needs a build."""
    assert (Path(sys.executable).parent / "horovodrun").exists(), "horovod is not installed here (make setup)"
    cpu, gpu, tf_only = init_script("0"), init_script("1"), init_script("1", ALLMTL_INIT_HOROVOD="0")
    cpu_out, gpu_out, tf_out = (p.communicate(timeout=600)[0] for p in (cpu, gpu, tf_only))
    assert cpu.returncode == 0 and "TensorFlow 2.15.1 present" in cpu_out, cpu_out
    assert "nothing to build" in cpu_out and "would run" not in cpu_out, cpu_out
    assert gpu.returncode == 0 and "built without NCCL" in gpu_out, gpu_out
    build = [line for line in gpu_out.splitlines() if "pip wheel" in line]
    assert build and "HOROVOD_GPU_OPERATIONS=NCCL" in build[0] and "HOROVOD_WITH_GLOO=1" in build[0], gpu_out
    assert "--no-cache-dir" in build[0] and "horovod==0.28.1" in build[0], gpu_out
    assert "pip uninstall -y -q horovod" in gpu_out, "a same-version build must be uninstalled first"
    assert tf_only.returncode == 0 and "horovod left as it is" in tf_out and "would run" not in tf_out, tf_out


@pytest.mark.slow  # 21 s, imports TensorFlow; the init script's other dry runs run in the default tier
def test_init_script_installs_the_wheel_kept_in_the_volume_instead_of_building(tmp_path):
    """A GPU node without NCCL would build; with the wheel kept in the cache folder it installs that."""
    pyver = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    folder = tmp_path / f"horovod-0.28.1-tf2.15.1-nccl-cuda12.2-{pyver}"
    folder.mkdir()
    wheel = folder / f"horovod-0.28.1-{pyver}-{pyver}-linux_x86_64.whl"
    wheel.write_bytes(b"")
    cached = init_script("1", ALLMTL_HOROVOD_WHEEL_CACHE=str(tmp_path))
    out = cached.communicate(timeout=600)[0]

    assert cached.returncode == 0, out
    assert f"installing the cached build {wheel}" in out
    assert "pip wheel" not in out, "nothing is built when the volume holds the wheel"


def dry_run_command(script: str, job: str, *args: str, **env: str) -> list[str]:
    result = run_script(DEPLOY / "spark-submit" / script, job, *args, env={"ALLMTL_DRY_RUN": "1", **env})
    assert result.returncode == 0, result.stderr
    return shlex.split(result.stdout)


def job_arguments(command: list[str]) -> tuple[Path, list[str]]:
    job = next(i for i, token in enumerate(command) if token.endswith(".py") and "/jobs/" in token)
    return Path(command[job]), command[job + 1 :]


def option(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, token in enumerate(command[:-1]) if token == name]


@pytest.fixture
def fake_jars(tmp_path) -> Path:
    version = makefile_var("DELTA_VERSION")
    for jar in (f"delta-spark_2.12-{version}.jar", f"delta-storage-{version}.jar"):
        (tmp_path / jar).write_bytes(b"")
    (tmp_path / "pyenv.tar.gz").write_bytes(b"")
    return tmp_path


def test_standalone_script_ships_jars_environment_and_code(fake_jars):
    command = dry_run_command(
        "standalone.sh",
        "ingest_slides",
        "--set",
        "ingest.max_partitions=4",
        SPARK_MASTER="spark://master:7077",
        ALLMTL_LAKEHOUSE="/mnt/shared/lakehouse",
        ALLMTL_JARS_DIR=str(fake_jars),
        ALLMTL_PYENV_ARCHIVE=str(fake_jars / "pyenv.tar.gz"),
    )
    assert option(command, "--master") == ["spark://master:7077"] and option(command, "--deploy-mode") == ["client"]
    version = makefile_var("DELTA_VERSION")
    assert option(command, "--jars") == [
        f"{fake_jars}/delta-spark_2.12-{version}.jar,{fake_jars}/delta-storage-{version}.jar"
    ]
    assert option(command, "--archives") == [f"{fake_jars}/pyenv.tar.gz#environment"]
    confs = option(command, "--conf")
    assert "spark.pyspark.python=./environment/bin/python" in confs
    assert f"spark.pyspark.driver.python={REPO}/.venv/bin/python" in confs
    assert option(command, "--py-files")[0].endswith("allmtl_spark.zip")
    job_file, arguments = job_arguments(command)
    assert job_file == REPO / "jobs" / "ingest_slides.py"
    namespace = parse_cli(entry_command(job_file), arguments, "standalone.sh")
    cfg = load_invocation(namespace, Path(namespace.config), "standalone.sh")
    assert cfg.spark.master is None and cfg.lakehouse.path == "/mnt/shared/lakehouse"
    assert cfg.ingest.max_partitions == 4  # the job's own arguments come last


def test_yarn_script_ships_the_config_in_cluster_mode_and_falls_back_to_packages(tmp_path, fake_jars):
    command = dry_run_command(
        "yarn.sh",
        "train_mtl",
        ALLMTL_LAKEHOUSE="hdfs:///allmtl/lakehouse",
        ALLMTL_JARS_DIR=str(tmp_path / "no-jars"),
        ALLMTL_PYENV_ARCHIVE="hdfs:///apps/env.tar.gz",
        ALLMTL_CONFIG="conf/paper.yaml",
    )
    assert option(command, "--master") == ["yarn"] and option(command, "--deploy-mode") == ["cluster"]
    version = makefile_var("DELTA_VERSION")
    assert option(command, "--packages") == [f"io.delta:delta-spark_2.12:{version},io.delta:delta-storage:{version}"]
    assert option(command, "--archives") == ["hdfs:///apps/env.tar.gz#environment"]
    assert option(command, "--files") == [str(REPO / "conf" / "paper.yaml")]
    assert "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python" in option(command, "--conf")
    job_file, arguments = job_arguments(command)
    namespace = parse_cli(entry_command(job_file), arguments, "yarn.sh")
    assert namespace.config == "paper.yaml"  # read from the container's working directory
    cfg = load_invocation(namespace, REPO / "conf" / namespace.config, "yarn.sh")
    assert cfg.spark.master is None and cfg.lakehouse.path == "hdfs:///allmtl/lakehouse"
    client = dry_run_command(
        "yarn.sh",
        "train_mtl",
        ALLMTL_LAKEHOUSE="hdfs:///l",
        ALLMTL_DEPLOY_MODE="client",
        ALLMTL_JARS_DIR=str(fake_jars),
        ALLMTL_PYENV_ARCHIVE=str(fake_jars / "pyenv.tar.gz"),
    )
    assert option(client, "--deploy-mode") == ["client"] and not option(client, "--files")
    assert job_arguments(client)[1][:2] == ["--config", str(REPO / "conf" / "prod.yaml")]


@pytest.mark.parametrize("script", ["standalone.sh", "yarn.sh"])
def test_submit_scripts_name_the_jobs_when_the_job_is_unknown(script):
    result = run_script(DEPLOY / "spark-submit" / script, "no_such_job", env={"ALLMTL_DRY_RUN": "1"})
    assert result.returncode == 2
    assert "unknown job 'no_such_job'" in result.stderr and "ingest_slides" in result.stderr


def crontab_entries() -> list[list[str]]:
    entries = []
    for line in (DEPLOY / "cron" / "allmtl-score.cron").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line):
            entries.append(line.split(None, 6))
    return entries


def test_crontab_line_runs_the_wrapper_nightly():
    (entry,) = crontab_entries()
    minute, hour, day_of_month, month, day_of_week, user, command = entry
    assert minute.isdigit() and 0 <= int(minute) < 60 and hour.isdigit() and 0 <= int(hour) < 24
    assert (day_of_month, month, day_of_week) == ("*", "*", "*"), "nightly"
    assert re.fullmatch(r"[a-z_][a-z0-9_-]*", user), "cron.d lines need a user field"
    assert command.split()[0].endswith("/deploy/cron/score_archive.sh")
    assert (DEPLOY / "cron" / "score_archive.sh").is_file()


def test_cron_wrapper_skips_while_a_previous_run_holds_the_lock(tmp_path):
    lock = tmp_path / "score.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_script(
            DEPLOY / "cron" / "score_archive.sh",
            timeout=30,
            env={
                "ALLMTL_LOCK_FILE": str(lock),
                "ALLMTL_LOG_DIR": str(tmp_path / "logs"),
                "ALLMTL_ENV_FILE": str(tmp_path / "none.env"),
                "ALLMTL_DRY_RUN": "1",
            },
        )
    assert result.returncode == 75, result.stderr
    assert "still holds" in result.stderr and result.stdout == ""


def test_cron_wrapper_submits_the_scoring_job_locally_with_delta(tmp_path, fake_jars):
    env_file = tmp_path / "score.env"
    env_file.write_text(
        f"ALLMTL_LAKEHOUSE={tmp_path}/lakehouse\nSPARK_MASTER=local[4]\nALLMTL_SCORE_MODEL=nightly-7-stage3-fab4-mtl\n"
    )
    result = run_script(
        DEPLOY / "cron" / "score_archive.sh",
        "--set",
        "spark.shuffle_partitions=2",
        timeout=30,
        env={
            "ALLMTL_LOCK_FILE": str(tmp_path / "lock"),
            "ALLMTL_LOG_DIR": str(tmp_path / "logs"),
            "ALLMTL_ENV_FILE": str(env_file),
            "ALLMTL_DRY_RUN": "1",
            "ALLMTL_JARS_DIR": str(fake_jars),
        },
    )
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout)
    assert option(command, "--master") == ["local[4]"] and len(option(command, "--jars")) == 1
    job_file, arguments = job_arguments(command)
    namespace = parse_cli(entry_command(job_file), arguments, "score_archive.sh")
    cfg = load_invocation(namespace, Path(namespace.config), "score_archive.sh")
    assert cfg.lakehouse.path == f"{tmp_path}/lakehouse" and cfg.spark.shuffle_partitions == 2
    assert cfg.score.model == "nightly-7-stage3-fab4-mtl"


@pytest.mark.parametrize("model", [None, "latest"])
def test_cron_wrapper_refuses_to_score_without_a_pinned_model(tmp_path, model):
    env_file = tmp_path / "score.env"
    env_file.write_text("" if model is None else f"ALLMTL_SCORE_MODEL={model}\n")
    result = run_script(
        DEPLOY / "cron" / "score_archive.sh",
        timeout=30,
        env={
            "ALLMTL_LOCK_FILE": str(tmp_path / "lock"),
            "ALLMTL_LOG_DIR": str(tmp_path / "logs"),
            "ALLMTL_ENV_FILE": str(env_file),
            "ALLMTL_DRY_RUN": "1",
            "ALLMTL_SCORE_MODEL": "",
        },
    )
    assert result.returncode == 2 and "set ALLMTL_SCORE_MODEL" in result.stderr and result.stdout == ""


# ---------------------------------------------------------------------------------------------
# Every file under deploy/
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p in deploy_files() if p.suffix in (".yml", ".yaml")], ids=rel)
def test_yaml_parses(path):
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(doc is not None for doc in documents), f"{rel(path)} has an empty document"


def test_every_deploy_file_is_referenced_by_the_guide():
    """The user's guide (README.md and docs/*.md) names every file under deploy/ by its repo-relative path."""
    guide = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    missing = [rel(p) for p in deploy_files() if rel(p) not in guide]
    assert missing == [], "README.md and docs/*.md do not mention: " + ", ".join(missing)
