"""The config schema: defaults fill in, bad configs fail before any job, naming the key."""

import copy

import pytest

from idscaling.config import validate_config
from idscaling.errors import ConfigError
from workflow_utils import REPO, copy_workflow, load_config, planned_jobs, snakemake, write_config

MINIMAL = {
    "corpora": {"code": {"source": "builtin", "name": "python-stdlib"}},
    "models": {"xs": {"n_layer": 1, "n_embd": 16, "n_head": 2}},
    "data_tokens": [1000],
}


def minimal(**changes):
    config = copy.deepcopy(MINIMAL)
    config.update(changes)
    return config


def test_defaults_fill_every_section():
    config = validate_config(minimal())
    assert config["train"]["context"] == 128
    assert config["intrinsic_dim"]["k"] == 20
    assert config["intrinsic_dim"]["metric"] == "cosine"
    assert config["seeds"] == [0]
    assert config["corpora"]["code"]["clean"]["dedup"] is True
    assert config["embedding"]["tokens_per_doc"] == 32


@pytest.mark.parametrize(
    "config, needle",
    [
        (minimal(trian={}), "trian"),
        (minimal(corpora={"a/b": {"source": "builtin", "name": "python-stdlib"}}), "a/b"),
        (minimal(corpora={"-x": {"source": "builtin", "name": "python-stdlib"}}), "-x"),
        (minimal(models={"-m": {"n_layer": 1, "n_embd": 16, "n_head": 2}}), "-m"),
        (minimal(models={"xs": {"n_layer": "2", "n_embd": 16, "n_head": 2}}), "models.xs.n_layer"),
        (minimal(models={"xs": {"n_layer": 1, "n_embd": 10, "n_head": 3}}), "models.xs"),
        (minimal(corpora={"c": {"source": "local"}}), "path"),
        (minimal(corpora={"c": {"source": "hf", "dataset": "x", "txt_field": "t"}}), "corpora.c.txt_field"),
        (minimal(corpora={"c": {"source": "builtin", "name": "python-stdlib", "docs": 3}}), "corpora.c.docs"),
        (minimal(train={"lr": -1}), "train.lr"),
        (minimal(data_tokens=[100]), "data_tokens"),
        (minimal(tokenizer={"kind": "pretrained"}), "tokenizer.name"),
        (minimal(corpora={"c": {"source": "control", "of": "nowhere"}}), "corpora.c.of"),
        (minimal(corpora={"code": {"source": "builtin", "name": "python-stdlib"},
                          "a": {"source": "control", "of": "code"},
                          "b": {"source": "control", "of": "a"}}), "corpora.b.of"),
        (minimal(corpora={"code": {"source": "builtin", "name": "python-stdlib"},
                          "a": {"source": "control", "of": "code", "kind": "reverse"}}), "corpora.a.kind"),
        (minimal(embedding={"model": "gpt2"}), "id_robustness.enabled"),
        (minimal(tokenizer={"kind": "pretrained", "name": "gpt2", "shared": True}), "tokenizer.shared"),
        (minimal(id_robustness={"position_bins": 0}), "id_robustness.position_bins"),
    ],
)
def test_bad_config_names_the_key(config, needle):
    with pytest.raises(ConfigError, match=None) as info:
        validate_config(config)
    assert needle in str(info.value)


def test_workflow_rejects_bad_config_before_any_job(tmp_path):
    copy_workflow(tmp_path)
    bad = load_config(tmp_path / "configs" / "test.yaml")
    bad["corpora"]["bad/name"] = bad["corpora"].pop("code")
    write_config(tmp_path / "bad.yaml", bad)
    proc = snakemake(tmp_path, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "bad/name" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()

    bad = load_config(tmp_path / "configs" / "test.yaml")
    bad["train"]["learning_rate"] = 1e-3
    write_config(tmp_path / "bad.yaml", bad)
    proc = snakemake(tmp_path, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "train.learning_rate" in proc.stderr + proc.stdout

    # a local corpus whose path matches nothing: named on the terminal before any job
    bad = load_config(tmp_path / "configs" / "test.yaml")
    bad["corpora"]["notes"] = {"source": "local", "path": str(tmp_path / "nowhere" / "*.txt")}
    write_config(tmp_path / "bad.yaml", bad)
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "no file matches corpora.notes.path" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def test_configfile_stands_alone(tmp_path):
    """A --configfile does not inherit config.yaml's corpora, models or data sizes."""
    copy_workflow(tmp_path)
    write_config(tmp_path / "mine.yaml", minimal())
    jobs = planned_jobs(tmp_path, "--configfile", "mine.yaml")
    assert jobs["corpus"] == 1          # only `code`, not config.yaml's two corpora
    assert jobs["train"] == 1           # 1 corpus x 1 model x 1 D x 1 seed
    default = load_config(tmp_path / "config.yaml")
    assert len(default["corpora"]) > 1 and len(default["models"]) > 1


def test_default_config_dry_run(tmp_path):
    copy_workflow(tmp_path)
    config = load_config(tmp_path / "config.yaml")
    jobs = planned_jobs(tmp_path, "--cores", "2")
    n_runs = len(config["corpora"]) * len(config["models"]) * len(config["data_tokens"]) * len(config.get("seeds", [0]))
    assert jobs["train"] == n_runs
    assert jobs["corpus"] == jobs["tokenize"] == jobs["embed"] == len(config["corpora"])
    assert jobs["subset"] == len(config["corpora"]) * len(config["data_tokens"])
    assert jobs["laws"] == 1


# The lints we keep on purpose: a rule's shell reads the keys that change no result from
# outside the rule so that Snakemake does not track them (params would re-run every run
# when, say, compile, checkpoint_every or the known-d device is toggled).
DELIBERATE_LINTS = {"train": "TRAIN_ENGINE", "known_d_run": "KNOWN_D_DEVICE"}


def test_lint_reports_nothing_but_the_deliberate_ones(tmp_path):
    copy_workflow(tmp_path)
    proc = snakemake(tmp_path, "--lint", check=False)
    out = proc.stdout + proc.stderr
    if "Congratulations, your workflow is in a good condition" in out:
        return
    lints = sorted(line.strip() for line in out.splitlines() if line.strip().startswith("* "))
    assert lints == sorted(f"* Shell command directly uses variable {v} from outside of the rule:"
                           for v in DELIBERATE_LINTS.values()), out
    assert out.count("Lints for") == len(DELIBERATE_LINTS), out
    for rule in DELIBERATE_LINTS:
        assert f"Lints for rule {rule} " in out, out


def test_paper_config_dry_run(tmp_path):
    """The paper's grid plans 528 training runs, hub corpora fetched as local jobs."""
    copy_workflow(tmp_path)
    config = load_config(tmp_path / "configs" / "paper.yaml")
    assert {spec["source"] for spec in config["corpora"].values()} == {"hf"}
    assert config["tokenizer"] == {"kind": "pretrained", "name": "gpt2"}
    jobs = planned_jobs(tmp_path, "--configfile", "configs/paper.yaml")
    # OpenWebText and The Stack: 7 sizes up to 2^30; TinyStories: its own 8; 8 models, 3 seeds
    assert jobs["train"] == (7 + 7 + 8) * 8 * 3
    assert jobs["corpus"] == 3 and jobs["embed"] == 3


KNOWN_D = {"arms": [{"d": 2, "s": 1.0}], "docs": [64, 128, 256]}


def test_known_d_alone_validates_with_defaults():
    config = validate_config({"known_d": copy.deepcopy(KNOWN_D)})
    kd = config["known_d"]
    assert kd["seeds"] == [0, 1] and kd["margin"] == 0.05 and kd["reference_factor"] == 1.5
    assert kd["train"]["max_steps"] == 8000 and kd["model"]["n_embd"] == 64
    assert config["corpora"] == {}


@pytest.mark.parametrize("config, needle", [
    ({}, "nothing to run"),
    ({"corpora": MINIMAL["corpora"], "data_tokens": [1000]}, "models is required"),
    ({"known_d": {"arms": [{"d": 2, "s": 4.0}], "docs": [64, 128, 256]}}, "known_d.arms.0.s"),
    ({"known_d": {"arms": [{"d": 2, "s": 1.0, "tau": 2}], "docs": [64, 128, 256]}}, "known_d.arms.0.tau"),
    ({"known_d": {"arms": [{"d": 2, "s": 1.0}], "docs": [64, 128]}}, "known_d.docs"),
    ({"known_d": {"arms": [{"d": 2, "s": 1.0}], "docs": [64, 128, 256], "seeds": [0, 1],
                  "width_seeds": [2]}}, "known_d.width_seeds"),
    ({"known_d": {"arms": [{"d": 2, "s": 1.0}], "docs": [64, 128, 256], "width_lr_scale": 0}},
     "known_d.width_lr_scale"),
])
def test_bad_known_d_config_names_the_key(config, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate_config(config)


@pytest.mark.parametrize("name", ["known_d.yaml", "known_d_gpu.yaml", "known_d_cells.yaml", "known_d_cells_d2.yaml"])
def test_known_d_config_dry_run(tmp_path, name):
    workdir = copy_workflow(tmp_path)
    jobs = planned_jobs(workdir, "--configfile", f"configs/{name}")
    config = load_config(workdir / "configs" / name)["known_d"]
    arms, sizes, seeds = len(config["arms"]), len(config["docs"]), len(config["seeds"])
    ref_sizes = len(set(config["docs"]) | set(config.get("reference_docs") or []))
    wide_seeds = len(config.get("width_seeds") or config["seeds"])
    learners = 2 if config.get("mlp_control", True) else 1
    # every seed: a network, an MLP (when asked for) and a reference per size; every width
    # seed: a 2x-wide network (and MLP) at the largest size
    assert jobs["known_d_run"] == arms * (seeds * (learners * sizes + ref_sizes) + learners * wide_seeds)
    assert jobs["known_d_laws"] == 1
    assert "train" not in jobs and "corpus" not in jobs


def test_a_step_budget_below_one_epoch_of_the_largest_d_is_refused():
    config = minimal(data_tokens=[1000, 10_000_000], train={"max_steps": 100, "batch_size": 8, "context": 64})
    with pytest.raises(ConfigError, match=r"data_tokens: D = 10000000 tokens is more than one run can see.*= 51200 tokens"):
        validate_config(config)
    paper = load_config(REPO / "configs" / "paper.yaml")
    paper["data_tokens"].append(2 ** 31)
    with pytest.raises(ConfigError, match="D = 2147483648"):
        validate_config(paper)
