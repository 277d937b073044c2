"""TF_CONFIG from scheduler node lists, and the job script templates (checked with bash -n and run in part)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfbert.cluster import main, tf_config, unique_hosts
from tfbert.errors import TfbertError

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "scripts").glob("*.sh"))


def test_a_pbs_nodefile_counts_each_host_once_in_order(tmp_path, capsys):
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("gpu07\ngpu07\ngpu07\ngpu07\ngpu03\ngpu03\ngpu03\ngpu03\n")
    assert main(["tf-config", "--nodes-file", str(nodefile), "--rank", "1", "--port", "24000"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "cluster": {"worker": ["gpu07:24000", "gpu03:24000"]}, "task": {"type": "worker", "index": 1}}


def test_slurm_hostnames_keep_their_order():
    hostnames = "node-a1\nnode-a2\nnode-b1\n"  # `scontrol show hostnames node-a[1-2],node-b1`
    config = tf_config(unique_hosts(hostnames.splitlines()), rank=2, port=23456)
    assert config["cluster"]["worker"] == ["node-a1:23456", "node-a2:23456", "node-b1:23456"]
    assert config["task"] == {"type": "worker", "index": 2}


def test_hosts_with_their_own_port_keep_it():
    assert tf_config(["127.0.0.1:5001", "127.0.0.1:5002"], 0, 23456)["cluster"]["worker"] == [
        "127.0.0.1:5001", "127.0.0.1:5002"]


@pytest.mark.parametrize("hosts, rank, message", [
    (["n1", "n2"], 2, "--rank 2 is out of range for 2 node(s) (n1, n2); use 0 to 1"),
    (["n1"], -1, "--rank -1 is out of range"),
    ([], 0, "the node list is empty"),
])
def test_a_bad_rank_or_empty_list_is_one_clear_error(hosts, rank, message):
    with pytest.raises(TfbertError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tf_config(hosts, rank)


def test_the_command_line_exits_2_with_one_line(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("a\nb\n")
    completed = subprocess.run([sys.executable, "-m", "tfbert.cluster", "tf-config", "--nodes-file", str(nodefile),
                                "--rank", "5"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == ["error: --rank 5 is out of range for 2 node(s) (a, b); use 0 to 1"]


def test_there_are_single_and_multi_node_templates_for_pbs_and_slurm():
    names = {path.name for path in TEMPLATES}
    assert {"pbs_single_node.sh", "pbs_multi_node.sh", "slurm_single_node.sh", "slurm_multi_node.sh"} <= names


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_each_template_is_valid_bash_and_resumes(template):
    subprocess.run(["bash", "-n", str(template)], check=True, timeout=30)
    if template.name != "job_env.sh":
        text = template.read_text()
        assert "source scripts/job_env.sh" in text and "TFBERT_TRAIN" in text


def test_job_env_pins_every_cache_under_the_job_folder(tmp_path):
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "4242", "HOME": str(tmp_path)}
    script = "source scripts/job_env.sh && echo $TFBERT_JOB_DIR $HF_HOME $HF_DATASETS_CACHE $TFBERT_CACHE $TMPDIR " \
             "$TFBERT_PORT && printf '%s ' \"${TFBERT_TRAIN[@]}\""
    completed = subprocess.run(["bash", "-c", f"cd {ROOT} && export TFBERT_JOB_DIR={tmp_path}/job && {script}"],
                               env=env, capture_output=True, text=True, timeout=30, check=True)
    folders, train = completed.stdout.splitlines()
    job, *caches, port = folders.split()
    assert job == f"{tmp_path}/job" and all(cache.startswith(job + "/") for cache in caches)
    assert all(Path(cache).is_dir() for cache in caches) and port == "24242"
    assert "train.py --resume auto --output_dir " + job + "/output" in train
