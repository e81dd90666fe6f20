"""The record checker of bench/check_golf_scores.py on a folder of made-up records built from the log
excerpts: what agrees, what does not and why, and the counts it prints; and on a bare git directory."""
import json
import shutil
import subprocess
import sys

from paths import LOGS, REPO

BENCH = REPO / "bench" / "check_golf_scores.py"


def record(root, name: str, submission: dict, logs: dict[str, str]) -> None:
    folder = root / "records" / "track_10min_16mb" / name
    folder.mkdir(parents=True)
    (folder / "submission.json").write_text(json.dumps(submission))
    for target, sample in logs.items():
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(LOGS / sample, folder / target)


def check(source, *args) -> list[str]:
    done = subprocess.run([sys.executable, str(BENCH), str(source), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_records_are_checked_per_seed_or_by_their_top_level_score(tmp_path):
    record(tmp_path, "a_phased", {"seed_results": {"42": {"val_bpb": 1.05989454, "val_loss": 2.31944212}}},
           {"train_seed42.log": "golf_quantized_ttt_phased.txt"})
    # Claims its diagnostic: the checker says which evaluation the claim is.
    record(tmp_path, "b_diagnostic", {"seed_results": {"42": {"val_bpb": 1.0725}}},
           {"train_seed42.log": "golf_quantized_ttt_phased.txt"})
    # Top-level only, at 4 decimals; the seed comes from the log's own `seed:` line.
    record(tmp_path, "c_top_level", {"val_bpb": 1.1556}, {"train.log": "golf_final_sliding_window_eval.txt"})
    # A seed scored by an evaluation-only re-run of its artifact, and a seed with no log at all.
    record(tmp_path, "d_reevaluated", {"seed_results": {"42": {"val_bpb": 1.064}, "7": {"val_bpb": 1.0}}},
           {"ttt_pr/seed_42.log": "golf_ttt_eval_only.txt"})
    record(tmp_path, "e_no_logs", {"val_bpb": 1.2}, {"requirements.txt": "not_a_log.txt"})
    lines = check(tmp_path)
    states = {line.split()[1].split("/")[-1]: line.split()[0] for line in lines
              if line.startswith(("agree", "DISAGREE", "unchecked"))}
    assert states == {"a_phased": "agree", "b_diagnostic": "DISAGREE", "c_top_level": "agree",
                      "d_reevaluated": "agree", "e_no_logs": "unchecked"}
    text = "\n".join(lines)
    assert ("seed 42: claims {'val_bpb': 1.0725}; train_seed42.log (seed 42): quantized_ttt_phased val_bpb "
            "1.05989454 val_loss 2.31944212; the claim is its diagnostic_quantized") in text
    assert "seed 7: no log" in text and "no log prints an evaluation" in text
    assert "agrees" not in text   # only with --verbose
    assert lines[-1] == "3 of 4 checked records agree (1 disagree, 1 unchecked); 3 of 4 scores (per seed where " \
                        "the submission gives them)"
    verbose = "\n".join(check(tmp_path, "--verbose"))
    assert "seed 42: quantized_ttt_phased agrees (ttt_pr/seed_42.log)" in verbose
    assert "final_sliding_window_eval agrees (train.log)" in verbose


def test_a_bare_git_directory_is_read_at_head(tmp_path):
    work = tmp_path / "work"
    record(work, "a_phased", {"seed_results": {"42": {"val_bpb": 1.05989454}}},
           {"train_seed42.log": "golf_quantized_ttt_phased.txt"})
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "records"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(tmp_path / "bare.git")], check=True)
    assert check(tmp_path / "bare.git")[-1].startswith("1 of 1 checked records agree")
