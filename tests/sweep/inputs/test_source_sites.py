"""Source mode's addresses, resolved in a script (tests/support/source_standin/train_standin.py, a stand-in for
modded-nanogpt's train_gpt.py, and small scripts written here), and the edits written at them; then every
resolution error of `sweep run`, each an exit 2 before anything is written or Ray is imported."""
from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from paths import SUPPORT
from sweeping import sweep_run_in

from sweep.errors import InputError
from sweep.inputs.source_sites import ScriptSites, check_template, edit, python_literal
from sweep.stores import tracking
from sweep.stores.study import create_study

STANDIN_DIR = SUPPORT / "source_standin"
STANDIN = STANDIN_DIR / "train_standin.py"


def standin_sites() -> ScriptSites:
    return ScriptSites(STANDIN.read_bytes(), STANDIN.name)


def line_of(text: str, script: Path = STANDIN) -> int:
    (number,) = [i for i, line in enumerate(script.read_text().splitlines(), 1) if text in line]
    return number


def sites_of(code: str) -> ScriptSites:
    return ScriptSites(textwrap.dedent(code).encode(), "train_gpt.py")


@pytest.mark.parametrize("key, kind, text", [
    ("LR_FLOOR", "assignment", "LR_FLOOR = 0.1"),
    ("CastedLinearT.x_s", "keyword", "self.lm_head = CastedLinearT("),        # a call inside GPT.__init__
    ("Hyperparameters.num_scheduled_iterations", "field", "num_scheduled_iterations: int = 20"),  # a dataclass field
    ("TrainingSchedule.split_embed_stage", "default", "def __init__(self, iterations, cooldown_frac"),
    ("TrainingSchedule.cooldown_frac", "keyword", "schedule = TrainingSchedule("),  # the call wins over the default
])
def test_each_kind_of_site_resolves_in_the_standin(key, kind, text):
    sites = standin_sites()
    site = sites.resolve(key, "space.yaml: params")
    assert site.kind == kind and site.first_line == line_of(text)


def test_precedence_is_the_order_in_which_a_value_takes_effect():
    sites = sites_of("""
        class Owner:
            lr = 0.1
            def __init__(self, lr=0.2, wd=0.3, *, eps=1e-8):
                pass
        def Owner2(beta=0.9):
            pass
        Owner(lr=0.5)
        mod.Owner(wd=0.6)
    """)
    assert sites.resolve("Owner.lr", "w").kind == "keyword"                       # the call's keyword
    assert sites.resolve("Owner.wd", "w").kind == "keyword"                       # also through mod.Owner(...)
    assert sites.resolve("Owner.eps", "w").kind == "default"                      # a keyword-only default
    assert sites.resolve("Owner2.beta", "w").kind == "default"                    # a def's default
    assert sites_of("class Owner:\n    lr = 0.1\n    def __init__(self, lr=0.2): pass\n").resolve(
        "Owner.lr", "w").kind == "field"


def test_an_address_with_no_site_names_the_closest_ones_that_exist():
    with pytest.raises(InputError) as e:
        standin_sites().resolve("CastedLinearT.ws_s", "space.yaml: params.CastedLinearT.ws_s")
    assert e.value.where == "space.yaml: params.CastedLinearT.ws_s"
    assert e.value.message.startswith("`CastedLinearT.ws_s`: no such site in train_standin.py; did you mean "
                                      "`CastedLinearT.w_s`")
    with pytest.raises(InputError, match=r"^w: `nothing_like_it`: no such site in train_standin.py$"):
        standin_sites().resolve("nothing_like_it", "w")


def test_several_sites_are_listed_with_their_lines_and_one_is_picked_with_at_line():
    sites = standin_sites()
    attn, smear = line_of("self.attn_gate = CastedLinear("), line_of("self.smear_gate = CastedLinear(")
    with pytest.raises(InputError) as e:
        sites.resolve("CastedLinear.x_s", "w")
    assert e.value.message.splitlines() == [
        "`CastedLinear.x_s`: 2 sites in train_standin.py; name one as `CastedLinear.x_s@LINE`:",
        f"  line {attn}: self.attn_gate = CastedLinear(12, x_s=1.0)",
        f"  line {smear + 1}: x_s=1.0)  # smear gate"]
    # A site that spans lines is named by any of them.
    assert sites.resolve(f"CastedLinear.x_s@{attn}", "w").first_line == attn
    assert sites.resolve(f"CastedLinear.x_s@{smear + 1}", "w").first_line == smear + 1


def test_at_line_must_name_a_line_of_a_site_that_takes_effect():
    sites = standin_sites()
    with pytest.raises(InputError, match=r"no site of `CastedLinear.x_s` on line 3 of train_standin.py; its sites:"):
        sites.resolve("CastedLinear.x_s@3", "w")
    # The default of TrainingSchedule.__init__ is overridden by the call's keyword: editing it would change nothing.
    default = line_of("def __init__(self, iterations, cooldown_frac")
    with pytest.raises(InputError) as e:
        sites.resolve(f"TrainingSchedule.cooldown_frac@{default}", "w")
    assert (f"line {default} of train_standin.py holds the default of the parameter cooldown_frac of def "
            f"TrainingSchedule.__init__, which the keyword cooldown_frac= of a call to TrainingSchedule "
            f"overrides") in e.value.message


def test_two_keys_on_one_site_or_nested_sites_are_refused():
    sites = standin_sites()
    line = line_of("self.lm_head = CastedLinearT(")
    with pytest.raises(InputError, match="are the same site"):
        sites.resolve_all({"CastedLinearT.x_s": "a", f"CastedLinearT.x_s@{line}": "b"})
    nested = sites_of("head = Owner(x_s=1.0)\n")
    with pytest.raises(InputError, match="overlap"):
        nested.resolve_all({"head": "a", "Owner.x_s": "b"})


@pytest.mark.parametrize("value", [0.1, 1 / 3, 100 / 448, 2.0 ** -9, 1e-300, 12, True, False, "fineweb"])
def test_a_written_value_reads_back_exactly(value):
    assert ast.literal_eval(python_literal(value)) == value
    assert type(ast.literal_eval(python_literal(value))) is type(value)


def test_a_template_needs_its_hole_and_must_be_an_expression():
    assert check_template("grad_scale * {}", "w") == "grad_scale * {}"
    for bad in ("grad_scale * 0.75/448", "{}, y=2", 3):
        with pytest.raises(InputError, match="^w: "):
            check_template(bad, "w")


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    body = [line for line in diff.splitlines()[2:] if not line.startswith("@@")]
    return [line[1:] for line in body if line.startswith("-")], [line[1:] for line in body if line.startswith("+")]


def test_an_edit_changes_only_the_addressed_sites_and_keeps_the_code_around_them():
    sites = standin_sites()
    values = {"CastedLinearT.x_s": 0.25, "CastedLinearT.grad_s": 0.002, "LR_FLOOR": 0.05,
              "Hyperparameters.num_scheduled_iterations": 12}
    result = edit(sites, values, {"CastedLinearT.grad_s": "grad_scale * {}"}, "w")
    removed, added = changed_lines(result.diff("a/train_standin.py", "b/train_standin.py"))
    assert removed == ["LR_FLOOR = 0.1", "        self.lm_head = CastedLinearT(use_fp8=True, x_s=100/448, w_s=1.6/448, "
                       "grad_s=grad_scale * 0.75/448)", "    num_scheduled_iterations: int = 20"]
    assert added == ["LR_FLOOR = 0.05", "        self.lm_head = CastedLinearT(use_fp8=True, x_s=0.25, w_s=1.6/448, "
                     "grad_s=grad_scale * 0.002)", "    num_scheduled_iterations: int = 12"]
    assert len(result.edited.splitlines()) == len(result.original.splitlines())
    assert result.original == STANDIN.read_bytes()


def test_a_site_over_several_lines_keeps_the_lines_after_it_in_place():
    code = "X = (1 +\n     2)\nY = 3\n"
    result = edit(ScriptSites(code.encode(), "s.py"), {"X": 0.5}, {}, "w")
    assert result.edited.decode().splitlines()[2] == "Y = 3"
    assert ast.literal_eval(ast.parse(result.edited).body[0].value) == 0.5


def test_a_template_with_a_negative_value_keeps_its_meaning():
    result = edit(sites_of("scale = 1.0\n"), {"scale": -2.0}, {"scale": "{} ** 2"}, "w")
    assert eval(ast.unparse(ast.parse(result.edited).body[0].value)) == 4.0


def test_an_edit_that_would_change_more_than_its_site_is_refused():
    # A template that closes the call and opens another changes the tree beyond the keyword's value.
    with pytest.raises(InputError, match="not the script with only the addressed sites changed"):
        edit(sites_of("f(a=1, b=2)\n"), {"f.a": 3}, {"f.a": "{}, c=(5"}, "w")


# --- `sweep run`: every resolution error is an exit 2 before anything is written or Ray imported ---

STANDIN_LINES = STANDIN.read_text().splitlines()


def standin_folder(folder: Path, params: dict, **space) -> Path:
    """`folder` holding a copy of the stand-in's folder as standin/ and a space file for it."""
    (folder / "standin").mkdir()
    for entry in STANDIN_DIR.iterdir():
        if entry.is_file():
            (folder / "standin" / entry.name).write_bytes(entry.read_bytes())
    data = {"name": "src", "metric": "val_loss", "mode": "min",
            "trainer": {"command": f"{sys.executable} standin/train_standin.py", "params": "source"},
            "params": params, **space}
    (folder / "space.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder / "space.yaml"


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


FLOAT = {"type": "float", "low": 0.05, "high": 1.0, "log": True}


@pytest.mark.parametrize("params, space, expected", [
    ({"CastedLinearT.ws_s": FLOAT}, {},
     "params.CastedLinearT.ws_s: `CastedLinearT.ws_s`: no such site in train_standin.py; did you mean "
     "`CastedLinearT.w_s`"),
    ({"CastedLinear.x_s": FLOAT}, {}, "params.CastedLinear.x_s: `CastedLinear.x_s`: 2 sites in train_standin.py; "
                                      "name one as `CastedLinear.x_s@LINE`:"),
    ({"CastedLinear.x_s@3": FLOAT}, {}, "no site of `CastedLinear.x_s` on line 3 of train_standin.py"),
    ({"CastedLinearT.grad_s": {**FLOAT, "expr": "grad_scale * 0.75/448"}}, {},
     "params.CastedLinearT.grad_s.expr: must be Python code with {} where the value goes"),
    ({"CastedLinearT.x_s": FLOAT}, {"fixed": {"LR_FLOR": 0.1}},
     "fixed.LR_FLOR: `LR_FLOR`: no such site in train_standin.py; did you mean `LR_FLOOR`?"),
    ({"CastedLinearT.x_s": FLOAT}, {"seed": "Hyperparameters.sed"},
     "space.yaml: seed: `Hyperparameters.sed`: no such site in train_standin.py; did you mean `Hyperparameters.seed`?"),
])
def test_every_resolution_error_exits_2_before_anything_is_written(tmp_path, params, space, expected):
    space_file = standin_folder(tmp_path, params, **space)
    before = listing(tmp_path)
    done = sweep_run_in(tmp_path, "--space", str(space_file), "--trials", "2")
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert done.stdout.strip() == "ray never imported"
    assert listing(tmp_path) == before        # no store, no runs/, nothing beside the script


def test_several_sites_list_each_line_in_the_error(tmp_path):
    space_file = standin_folder(tmp_path, {"CastedLinear.x_s": FLOAT})
    done = sweep_run_in(tmp_path, "--space", str(space_file))
    attn, smear = line_of("self.attn_gate = CastedLinear("), line_of("x_s=1.0)  # smear gate")
    assert f"  line {attn}: self.attn_gate = CastedLinear(12, x_s=1.0)\n  line {smear}: x_s=1.0)  # smear gate" \
        in done.stderr


def test_source_mode_needs_a_command_that_runs_a_python_file(tmp_path):
    space_file = standin_folder(tmp_path, {"CastedLinearT.x_s": FLOAT})
    done = sweep_run_in(tmp_path, "--space", str(space_file), "--trainer-cmd", "bash run.sh")
    assert done.returncode == 2 and "runs no Python file, and source mode writes the keys" in done.stderr


def test_the_copy_a_trial_runs_imports_and_reads_the_files_beside_the_original(tmp_path):
    """The copy's folder (sweep.trial.command.write_copy) run as a trial runs it, without Ray: the sibling
    module imports, the sibling file reads, the log lands in the working folder, and the script's folder is
    left as it was (its bytecode cache too)."""
    from sweep.inputs.trainer_spec import TrainerSpec
    from sweep.trial.command import TrialSettings, build_command, edit_script, write_copy

    standin_folder(tmp_path, {"CastedLinearT.x_s": FLOAT})
    before = listing(tmp_path / "standin")
    trainer = TrainerSpec(f"{sys.executable} standin/train_standin.py", "source")
    settings = TrialSettings(sweep="s", preset="", objective=None, run_root=str(tmp_path / "runs"),
                             cwd=str(tmp_path), mlflow_uri="", experiment_id="", parent_run_id="", trainer=trainer)
    run_dir = tmp_path / "runs" / "trial_0000"
    source = edit_script(trainer, str(tmp_path), {"CastedLinearT.x_s": 0.5, "LR_FLOOR": 0.0})
    copy = write_copy(settings, source, run_dir)
    assert sorted(p.name for p in copy.parent.iterdir()) == ["standin_ops.py", "standin_table.txt", copy.name]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}   # let it write bytecode
    done = subprocess.run(build_command(settings, {}, run_dir), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    logfile = tmp_path / done.stdout.splitlines()[0]
    assert logfile.parent == tmp_path / "logs"
    # The script read itself through sys.argv[0]: its log starts with the copy, not the original.
    assert logfile.read_text().startswith(source.edited.decode())
    assert (copy.parent / "__pycache__").is_dir()       # the sibling module's bytecode went beside the copy
    assert listing(tmp_path / "standin") == before


def test_the_shipped_upstream_space_starts_from_heads_values_and_pr175s():
    """search_spaces/speedrun_upstream.yaml against a script with HEAD's two calls (the call shapes as
    modded-nanogpt's README and record logs state them): its first point writes back exactly HEAD's values
    on every world size, its second PR #175's head scales."""
    from paths import SPACES

    from sweep.inputs.space import load_space

    space = load_space(SPACES / "speedrun_upstream.yaml").with_trainer()
    assert space.trainer.source_mode and space.trainer.seed_key == "" and space.preset == "speedrun"
    script = ("grad_scale = 1 / grad_accum_steps\n"
              "class GPT:\n    def __init__(self):\n"
              "        self.lm_head = CastedLinearT(model_dim, self.vocab_size, use_fp8=use_fp8, x_s=100/448, "
              "w_s=1.6/448, grad_s=grad_scale * 0.75/448)\n"
              "training_schedule = TrainingSchedule(TRAINING_STAGES, args.num_scheduled_iterations, "
              "args.num_extension_iterations, cooldown_frac=0.60)\n")
    head, pr175 = space.points_to_evaluate
    tree = ast.parse(edit(ScriptSites(script.encode(), "train_gpt.py"), head, space.trainer.exprs, "w").edited)
    call = tree.body[1].body[0].body[0].value
    written = {kw.arg: ast.unparse(kw.value) for kw in call.keywords}
    for grad_accum_steps in (1, 2, 4, 8):
        grad_scale = 1 / grad_accum_steps
        assert eval(written["grad_s"]) == grad_scale * 0.75 / 448
    assert (eval(written["x_s"]), eval(written["w_s"])) == (100 / 448, 1.6 / 448)
    assert tree.body[2].value.keywords[0].value.value == 0.6
    assert (pr175["CastedLinearT.x_s"], pr175["CastedLinearT.w_s"], pr175["CastedLinearT.grad_s"]) == (
        100 / 448, 1.5 / 448, 0.75 / 448)


def test_resume_refuses_a_script_changed_since_the_sweep_checked_it(tmp_path, monkeypatch):
    from sweep.cli import parser
    from sweep.commands.run import build_plan

    space_file = standin_folder(tmp_path, {"CastedLinearT.x_s": FLOAT})
    monkeypatch.chdir(tmp_path)
    plan = build_plan(parser().parse_args(["run", "--space", str(space_file), "--name", "pinned", "--mlflow-uri",
                                           f"sqlite:///{tmp_path}/mlflow.db", "--storage", f"sqlite:///{tmp_path}/o.db"]))
    assert plan.source_sha256 == hashlib.sha256(STANDIN.read_bytes()).hexdigest()
    plan.save()
    # The sweep's stores, which a resume checks first: a driver stopped before the parent run was opened.
    create_study(plan.storage, plan.name, "min", "val_loss")
    tracking.client(plan.mlflow_uri).search_experiments()
    script = tmp_path / "standin" / STANDIN.name
    script.write_text(script.read_text().replace("LR_FLOOR = 0.1", "LR_FLOOR = 0.2"))
    probe = "import sys; from sweep.cli import main; rc = main(['resume', 'pinned']); print('ray' in sys.modules); sys.exit(rc)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"sweep resume: error: {script}: has changed since the sweep checked it (sha256 {plan.source_sha256}" \
        in done.stderr
    assert done.stdout.strip() == "False"
