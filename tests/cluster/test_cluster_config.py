"""cluster.yaml through the installed Ray's own cluster-launcher preparation and validation.

`ray up` runs `prepare_config` (merge with the AWS defaults, setup-command merging, docker checks, per
node type min/max workers) and `validate_config` (ray-schema.json plus cross-field checks) before it talks
to AWS; those are the offline steps run here. The AWS steps after them (instance-type resource detection,
IAM/key/subnet/security-group bootstrap) need credentials and network and are not run.
"""
import copy
import re
import shlex
import subprocess

import jsonschema
import pytest
import tomllib
import yaml
from paths import REPO
from ray.autoscaler._private.command_runner import _with_interactive
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(CLUSTER.read_text())


@pytest.fixture(scope="module")
def prepared(raw):
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _commands(config, *keys):
    return [c for k in keys for c in config[k]]


def test_ray_accepts_the_file_and_the_resource_shapes_hold(prepared):
    nodes = prepared["available_node_types"]
    head = nodes[prepared["head_node_type"]]
    workers = [v for k, v in nodes.items() if k != prepared["head_node_type"]]
    assert prepared["provider"]["type"] == "aws"
    assert head["resources"].get("GPU") == 0 and head["resources"].get("CPU") == 0
    assert head["max_workers"] == 0
    (worker,) = workers
    assert worker["resources"] == {"CPU": 192, "GPU": 8}
    assert worker["min_workers"] == 0
    assert worker["max_workers"] == prepared["max_workers"] >= 1
    assert worker["node_config"]["InstanceType"] == "p5.48xlarge"
    assert prepared["idle_timeout_minutes"] > 0


def test_validation_is_real(raw):
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["h100x8"]["min_workers"] = raw["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(broken))
    unknown = copy.deepcopy(raw)
    unknown["gpus_per_node"] = 8
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(unknown))


def test_no_command_comes_from_rays_defaults(raw, prepared):
    # prepare_config fills any list the file leaves out from Ray's AWS defaults (which install a Ray
    # nightly): every command list must be the file's own.
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands", "initialization_commands"):
        assert key in raw, key
    text = "\n".join(_commands(prepared, "head_setup_commands", "worker_setup_commands",
                               "head_start_ray_commands", "worker_start_ray_commands"))
    assert "ray-wheels" not in text and "3.0.0.dev0" not in text


def test_every_command_is_valid_bash_as_ray_runs_it(prepared):
    for cmd in _commands(prepared, "initialization_commands", "head_setup_commands", "worker_setup_commands",
                         "head_start_ray_commands", "worker_start_ray_commands"):
        (script,) = shlex.split(_with_interactive(cmd)[-1])   # the wrapper Ray's SSH runner puts around it
        proc = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert proc.returncode == 0, f"{cmd!r}: {proc.stderr}"


def test_the_project_version_is_pinned_once_and_matches_the_package(raw):
    text = CLUSTER.read_text()
    pins = re.findall(r"GPT_SWEEP_VERSION=(\S+)", text)
    assert len(pins) == 1
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert pins[0] == version
    install = next(c for c in raw["setup_commands"] if "pip install" in c and "$wheel" in c)
    assert "gpt_sweep-$GPT_SWEEP_VERSION-py3-none-any.whl" in install
    for pinned in ("ray[default,tune]==", "torch==", "optuna==", "mlflow=="):
        assert pinned in install
    assert raw["file_mounts"]["/home/ubuntu/gpt-sweep-dist"] == "./dist"
    assert (REPO / raw["file_mounts"]["/home/ubuntu/search_spaces"]).is_dir()


def test_workers_prepare_the_dataset_on_local_disk(prepared):
    worker_only = [c for c in prepared["worker_setup_commands"] if c not in prepared["setup_commands"]]
    (prep,) = [c for c in worker_only if "trainer data download" in c]
    assert "--out ~/gpt-sweep-data" in prep and "/opt/dlami/nvme" in prep
    assert not any("trainer data download" in c for c in prepared["head_setup_commands"])


def test_head_starts_ray_mlflow_and_the_optuna_database(prepared):
    cmds = prepared["head_start_ray_commands"]
    assert any(re.search(r"\bray start --head\b", c) for c in cmds)
    (mlflow,) = [c for c in cmds if "mlflow\" server" in c]
    assert '--host "$head_ip"' in mlflow and "0.0.0.0" not in mlflow
    assert '--backend-store-uri "postgresql' in mlflow
    assert "--artifacts-destination \"$GPT_SWEEP_BUCKET" in mlflow
    (db,) = [c for c in cmds if "createdb" in c]
    assert "optuna" in db and "listen_addresses" in db
    (env,) = [c for c in cmds if "gpt-sweep.env" in c and "SWEEP_STORAGE=" in c]
    assert "postgresql+psycopg2://sweep@" in env and "SWEEP_MLFLOW_URI=http://$head_ip:5000" in env
    assert not any("--dashboard-host=0.0.0.0" in c for c in cmds)


def test_the_database_password_is_on_no_command_line(prepared):
    # Ray runs each command through `bash -c`; the password may be read into a file or a heredoc by bash
    # itself, never passed to a program as an argument.
    text = "\n".join(_commands(prepared, "head_setup_commands", "head_start_ray_commands", "setup_commands"))
    reads = [line.strip() for line in text.splitlines() if ".gpt-sweep-db-password" in line]
    assert reads == ["[ -f ~/.gpt-sweep-db-password ] || (umask 077; openssl rand -hex 24 > ~/.gpt-sweep-db-password)",
                     "ALTER ROLE sweep PASSWORD '$(cat ~/.gpt-sweep-db-password)';",
                     '(umask 077; echo "*:5432:*:sweep:$(cat ~/.gpt-sweep-db-password)" > ~/.pgpass)']
    (mlflow,) = [c for c in prepared["head_start_ray_commands"] if "mlflow\" server" in c]
    assert re.search(r'--backend-store-uri "postgresql\+psycopg2://sweep@127\.0\.0\.1:5432/mlflow"', mlflow)
    assert "PGPASSFILE" in mlflow
    (db,) = [c for c in prepared["head_start_ray_commands"] if "ALTER ROLE" in c]
    assert re.search(r"psql -q <<EOF\nALTER ROLE sweep PASSWORD '\$\(cat ~/.gpt-sweep-db-password\)';\nEOF", db)


def test_settings_scripts_write_what_the_sweep_reads(raw, tmp_path):
    # Run the two scripts that only touch $HOME: the settings file of every node and the head's env file.
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    (tmp_path / ".gpt-sweep-db-password").write_text("0123abcd\n")
    (conf_cmd,) = [c for c in raw["setup_commands"] if "gpt-sweep.conf <<" in c]
    (env_cmd,) = [c for c in raw["head_start_ray_commands"] if "gpt-sweep.env <<" in c]
    for cmd in (conf_cmd, env_cmd):
        subprocess.run(["bash", "-c", cmd], env=env, check=True, cwd=tmp_path)
    out = subprocess.run(["bash", "-c", "source ~/gpt-sweep.conf; source ~/gpt-sweep.env; "
                          "echo $GPT_SWEEP_VERSION; echo $GPT_SWEEP_BUCKET; echo $SWEEP_STORAGE; "
                          "echo $SWEEP_MLFLOW_URI; echo $SWEEP_RESULTS_DIR; echo $SWEEP_DATA_PATH"],
                         env=env, check=True, capture_output=True, text=True).stdout.splitlines()
    _, bucket, storage, mlflow_uri, tune, data = out
    assert bucket.startswith("s3://") and " " not in bucket
    assert re.fullmatch(r"postgresql\+psycopg2://sweep@[\d.]+:5432/optuna", storage)
    assert re.fullmatch(r"http://[\d.]+:5000", mlflow_uri)
    assert tune == f"{bucket}/tune"
    assert data == f"data.path={tmp_path}/gpt-sweep-data/datasets/fineweb10B_sp1024"
    assert oct((tmp_path / "gpt-sweep.env").stat().st_mode & 0o777) == "0o600"
    assert "0123abcd" not in (tmp_path / "gpt-sweep.env").read_text()
    # libpq's password file: any host, port 5432, any database, user sweep; libpq ignores it unless 0600.
    assert (tmp_path / ".pgpass").read_text() == "*:5432:*:sweep:0123abcd\n"
    assert oct((tmp_path / ".pgpass").stat().st_mode & 0o777) == "0o600"
