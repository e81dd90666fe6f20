import json

import pytest
from paths import LOGS

from sweep.runlog.logparse import (
    GPT_SWEEP,
    MODDED_NANOGPT,
    PARAMETER_GOLF,
    LiveLog,
    LogFold,
    NotATrainingLog,
    TrainPoint,
    ValPoint,
    is_diagnostic,
    parse_log,
)


def parse_line(line: str):
    """What a fresh fold makes of one line: its classification."""
    return LogFold().feed(line)


# Expected values are read off the hand-written sample files.
EXPECTED = {
    "modded_nanogpt_2024.txt": dict(
        source=MODDED_NANOGPT, complete=True, n_train=20, n_val=3, total_steps=20,
        final_val_loss=6.3829, final_val_bpb=None, wallclock_s=1.533, stopped_early=False,
        last_train=TrainPoint(20, 20, 6.4305, 1469.0, 146.92), artifact_bytes=None, roundtrip_val_bpb=None),
    "modded_nanogpt_2025.txt": dict(
        source=MODDED_NANOGPT, complete=True, n_train=12, n_val=3, total_steps=12,
        final_val_loss=3.2784, final_val_bpb=None, wallclock_s=0.784, stopped_early=False,
        last_train=TrainPoint(12, 12, None, 723.0, 60.25), artifact_bytes=None, roundtrip_val_bpb=None,
        peak_mem_mib=29248.0),
    "modded_nanogpt_truncated.txt": dict(
        source=MODDED_NANOGPT, complete=False, n_train=8, n_val=2, total_steps=12,
        final_val_loss=None, wallclock_s=None, stopped_early=False, last_step=8),
    "parameter_golf_int8.txt": dict(
        source=PARAMETER_GOLF, complete=True, n_train=5, n_val=4, total_steps=20000,
        final_val_loss=2.0606, final_val_bpb=1.2172, wallclock_s=600.038, stopped_early=True,
        artifact_bytes=15815847, code_bytes=47642, total_bytes=15863489,
        roundtrip_val_loss=2.07269931, roundtrip_val_bpb=1.22436570, peak_mem_mib=10184.0),
    "parameter_golf_truncated.txt": dict(
        source=PARAMETER_GOLF, complete=False, n_val=4, final_val_loss=2.0606, stopped_early=True,
        artifact_bytes=None, roundtrip_val_bpb=None),
    "parameter_golf_int6_sliding.txt": dict(
        source=PARAMETER_GOLF, complete=True, n_train=4, n_val=3, total_steps=20000, last_step=7201,
        final_val_loss=1.9748, final_val_bpb=1.1696, wallclock_s=600.036, stopped_early=True,
        artifact_bytes=15482082, code_bytes=63056, total_bytes=15545138,
        # The record's score: its last evaluation (the sliding window), not the plain round trip before it.
        roundtrip_val_loss=1.94822966, roundtrip_val_bpb=1.15385454, score_label="final_int6_sliding_window"),
    "parameter_golf_2026.txt": dict(
        source=PARAMETER_GOLF, complete=True, n_train=4, n_val=3, total_steps=20000, last_step=5048,
        final_val_loss=2.8146, final_val_bpb=1.0896, wallclock_s=588.029, stopped_early=True,
        artifact_bytes=15931272, code_bytes=41571, total_bytes=15972843,
        # The last evaluation (test-time training), never the `diagnostic quantized` one before it.
        roundtrip_val_loss=2.79583345, roundtrip_val_bpb=1.08235425, score_label="quantized_ttt",
        last_train=TrainPoint(4000, 20000, 2.8961, 8.0 * 60_000, None)),
    "gpt_sweep_train.log": dict(
        source=GPT_SWEEP, complete=True, n_train=5, n_val=3, total_steps=1200, last_step=1037,
        final_val_loss=2.3312, final_val_bpb=1.3771, wallclock_s=45.040, stopped_early=True, untie_step=800,
        artifact_bytes=14873012, code_bytes=112233, total_bytes=14985245,
        roundtrip_val_loss=2.33712905, roundtrip_val_bpb=1.38061147, peak_mem_mib=10184.0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_logs(name):
    log = parse_log((LOGS / name).read_text())
    for key, want in EXPECTED[name].items():
        if key == "n_train":
            assert len(log.train) == want, key
        elif key == "n_val":
            assert len(log.val) == want, key
        elif key == "last_train":
            assert log.train[-1] == want
        elif isinstance(want, float):
            assert getattr(log, key) == pytest.approx(want, rel=1e-9), key
        else:
            assert getattr(log, key) == want, key
    assert log.status == ("incomplete" if not log.complete else
                          "wallclock_cap" if log.stopped_early else "ok")


def test_source_code_at_the_top_of_a_log_is_not_parsed():
    text = (LOGS / "parameter_golf_int6_sliding.txt").read_text()
    code_lines = text.split("=" * 100)[0].splitlines()
    assert any("step:{step}" in line for line in code_lines)
    assert all(parse_line(line) is None for line in code_lines)
    assert parse_line("val_loss = 0") is None
    assert parse_line("val_loss = val_loss / val_steps") is None


def test_oldest_modded_nanogpt_lines_with_nan_step_avg():
    log = parse_log((LOGS / "modded_nanogpt_2024.txt").read_text())
    assert log.val[0] == ValPoint(0, 16.0098, None, 286.0, None)
    assert log.train[0] == TrainPoint(1, 20, 16.0051, 60444.0, None)
    assert log.hyperparameters["pytorch_version"] == "2.4.1+cu121"


def test_parameter_golf_facts_and_evaluations():
    log = parse_log((LOGS / "parameter_golf_int6_sliding.txt").read_text())
    assert log.hyperparameters["seed"] == "1337"
    assert log.hyperparameters["train_seq_len"] == "2048"
    assert log.hyperparameters["model_params"] == "22368841"
    assert log.evals["final_int6_sliding_window"] == (1.94822966, 1.15385454)
    assert log.evals["diagnostic_post_ema"] == (1.9721, 1.1680)
    assert "final_int6_zstd_roundtrip" in log.evals
    # The int8 artifact printed before the int6 one is not the submission.
    assert log.artifact_bytes != 21410856


def test_parameter_golf_2026_hyperparameter_block_and_minutes():
    log = parse_log((LOGS / "parameter_golf_2026.txt").read_text())
    assert log.hyperparameters["matrix_lr"] == "0.026"
    assert log.hyperparameters["num_layers"] == "11"
    assert log.val[-1] == ValPoint(5048, 2.8146, 1.0896, None, None)
    assert log.train[2].train_time_ms == pytest.approx(0.9 * 60_000)
    assert log.evals["quantized_ttt"] == (2.79583345, 1.08235425)


def test_exact_value_wins_over_rounded_in_either_order():
    head = "step:1/1 train_loss:3.0 train_time:1ms step_avg:1.00ms\n" \
           "step:1/1 val_loss:3.0 val_bpb:1.5 train_time:1ms step_avg:1.00ms\n"
    exact_last = head + ("final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms\n"
                         "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570\n")
    exact_first = head + ("final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570\n"
                          "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms\n")
    for text in (exact_last, exact_first):
        log = parse_log(text)
        assert (log.roundtrip_val_loss, log.roundtrip_val_bpb) == (2.07269931, 1.22436570)


@pytest.mark.parametrize("prefix", ["[default0]:", "1776142719.400 ", "[2026-03-18 14:38:12] ",
                                    "(TrainTrial pid=4242) ", "(TrainTrial pid=4242, ip=10.0.1.7) "])
def test_launcher_prefixes_are_ignored(prefix):
    plain = (LOGS / "parameter_golf_int8.txt").read_text()
    prefixed = "\n".join(prefix + line for line in plain.splitlines())
    a, b = parse_log(plain), parse_log(prefixed)
    assert (a.train, a.val, a.roundtrip_val_bpb, a.artifact_bytes, a.complete) == \
           (b.train, b.val, b.roundtrip_val_bpb, b.artifact_bytes, b.complete)


def test_a_rerun_appended_to_the_same_file_reports_the_last_run():
    first = (LOGS / "modded_nanogpt_truncated.txt").read_text()
    second = (LOGS / "modded_nanogpt_2025.txt").read_text()
    log = parse_log(first + second)
    assert log.complete and log.final_val_loss == 3.2784
    assert [p.step for p in log.val] == [0, 6, 12]


def test_diverged_run():
    text = ("world_size:1 device:cpu torch:2.13.0+cpu params:61698\n"
            "step:1/10 train_loss:6.2413 train_time:739ms step_avg:738.83ms\n"
            "step:2/10 train_loss:nan train_time:1677ms step_avg:838.26ms\n"
            "diverged: non-finite train_loss at step:2/10\n"
            "peak memory allocated: 444 MiB\n")
    log = parse_log(text)
    assert log.source == GPT_SWEEP and log.diverged and log.complete and log.status == "diverged"
    assert log.final_val_loss is None


@pytest.mark.parametrize("text", [
    "",
    (LOGS / "not_a_log.txt").read_text(),
    "import torch\nprint(f'step:{step}/{n} val_loss:{loss:.4f}')\n",
    "warmup_step:1/20\nwarmup_step:2/20\n",
])
def test_not_a_training_log(text):
    with pytest.raises(NotATrainingLog, match="no training step lines"):
        parse_log(text)


@pytest.mark.parametrize("line, expected", [
    ("step:5/100 train_loss:3.2500 train_time:120ms step_avg:24.00ms",
     {"event": "train", "step": 5, "total_steps": 100, "train_loss": 3.25, "train_time_ms": 120.0,
      "step_avg_ms": 24.0}),
    ("step:100/100 val_loss:3.2800 val_bpb:1.2000 train_time:2400ms step_avg:24.00ms",
     {"event": "val", "step": 100, "total_steps": 100, "val_loss": 3.28, "val_bpb": 1.2,
      "train_time_ms": 2400.0, "step_avg_ms": 24.0}),
    ("500/20000 train_loss: 3.3964 train_time: 0.9m tok/s: 7669991",
     {"event": "train", "step": 500, "total_steps": 20000, "train_loss": 3.3964, "train_time_ms": 54000.0,
      "step_avg_ms": None}),
    ("final_int6_sliding_window_exact val_loss:1.94822966 val_bpb:1.15385454",
     {"event": "eval", "label": "final_int6_sliding_window", "val_loss": 1.94822966, "val_bpb": 1.15385454,
      "eval_time_ms": None, "exact": True}),
    ("Serialized model int6+zstd: 15482082 bytes",
     {"event": "size", "kind": "model", "scheme": "int6+zstd", "bytes": 15482082}),
    ("Total submission size: 88525099 bytes", {"event": "size", "kind": "total", "scheme": None, "bytes": 88525099}),
    ("stopping_early: wallclock_cap train_time: 588029ms step: 5048/20000",
     {"event": "stop", "reason": "wallclock_cap", "step": 5048, "total_steps": 20000, "train_time_ms": 588029.0}),
    ("untie step:800/1200", {"event": "untie", "step": 800, "total_steps": 1200}),
    ("peak memory allocated: 10184 MiB reserved: 10200 MiB", {"event": "peak_mem", "peak_mem_mib": 10184.0}),
    ("warmup_step:3/20", None),
    ("NCCL version 2.27.5+cuda12.9", None),
    ("    log0(f\"step:{step}/{args.iterations} val_loss:{val_loss:.4f}\")", None),
])
def test_parse_line(line, expected):
    assert parse_line(line) == expected


def test_our_train_log_agrees_with_events_jsonl(small_trainer_run):
    log = parse_log((small_trainer_run / "train.log").read_text())
    events = [json.loads(line) for line in (small_trainer_run / "events.jsonl").read_text().splitlines()]
    vals = [e for e in events if e["event"] == "val"]
    trains = [e for e in events if e["event"] == "train"]
    final = next(e for e in events if e["event"] == "final")
    assert log.source == GPT_SWEEP and log.complete and log.status == "ok"
    assert [p.step for p in log.val] == [e["step"] for e in vals]
    assert [p.step for p in log.train] == [e["step"] for e in trains]
    for point, event in zip(log.val, vals):
        assert point.val_loss == pytest.approx(event["val_loss"], abs=5e-5)
        assert point.val_bpb == pytest.approx(event["val_bpb"], abs=5e-5)
        assert point.train_time_ms == pytest.approx(event["train_time_ms"], abs=0.5)
    for point, event in zip(log.train, trains):
        assert point.train_loss == pytest.approx(event["train_loss"], abs=5e-5)
    assert log.final_val_loss == pytest.approx(final["val_loss"], abs=5e-5)
    assert log.wallclock_s == pytest.approx(final["train_time_ms"] / 1000, abs=1e-3)
    assert log.peak_mem_mib == pytest.approx(final["peak_mem_mib"], abs=0.5)
    assert log.total_steps == final["step"]


@pytest.mark.parametrize("name", sorted(n for n, want in EXPECTED.items() if want["complete"]))
@pytest.mark.parametrize("prefix", ["", "[default0]:", "[rank0]: "])
def test_a_live_trial_reads_a_log_as_import_logs_does(name, prefix):
    text = (LOGS / name).read_text()
    live = LiveLog()
    events = [e for line in text.splitlines() for e in live.feed(prefix + line)] + live.finish()
    log = parse_log(text)
    assert [e["step"] for e in events if e["event"] == "train"] == [p.step for p in log.train]
    vals = [e for e in events if e["event"] == "val"]
    assert [(e["step"], e["val_loss"], e.get("val_bpb")) for e in vals] == [(p.step, p.val_loss, p.val_bpb)
                                                                           for p in log.val]
    final = events[-1]
    assert final["event"] == "final" and (final["val_loss"], final.get("val_bpb")) == (log.final_val_loss,
                                                                                       log.final_val_bpb)
    assert final["status"] == log.status
    exports = [e for e in events if e["event"] == "export"]
    assert [(e.get("artifact_bytes"), e.get("roundtrip_val_bpb")) for e in exports] == (
        [(log.artifact_bytes, log.roundtrip_val_bpb)] if log.artifact_bytes or log.roundtrip_val_bpb else [])


# Trimmed excerpts of upstream record logs, one per evaluation shape, each with the score its record
# claims for that seed (submission.json): the rule must read exactly that evaluation.
RECORD_SCORES = {
    "parameter_golf_int8.txt": ("final_int8_zlib_roundtrip", 2.07269931, 1.22436570),
    "golf_final_ttt_lora.txt": ("final_ttt_lora", 2.0153, 1.1935),
    "golf_final_sliding_window_eval.txt": ("final_sliding_window_eval", 1.95110428, 1.15555486),
    "parameter_golf_int6_sliding.txt": ("final_int6_sliding_window", 1.94822966, 1.15385454),
    "golf_legal_ttt.txt": ("legal_ttt", 1.88976776, 1.11922988),
    "golf_quantized_sliding_window.txt": ("quantized_sliding_window", 2.80691494, 1.08664424),
    "golf_legal_ttt_exact.txt": ("legal_ttt", 2.79517119, 1.08209788),
    "golf_quantized_ttt_lora.txt": ("quantized_ttt_lora", 2.77059090, 1.07258208),
    "golf_quantized_ttt_phased.txt": ("quantized_ttt_phased", 2.31944212, 1.05989454),
}


@pytest.mark.parametrize("name", sorted(RECORD_SCORES))
def test_the_golf_score_is_the_last_evaluation_of_the_submitted_model(name):
    label, loss, bpb = RECORD_SCORES[name]
    text = (LOGS / name).read_text()
    log = parse_log(text)
    assert (log.score_label, log.roundtrip_val_loss, log.roundtrip_val_bpb) == (label, loss, bpb)
    live = LiveLog()
    for line in text.splitlines():
        live.feed(line)
    export = live.finish()[0]
    assert export["event"] == "export"
    assert (export["score_label"], export["roundtrip_val_loss"], export["roundtrip_val_bpb"]) == (label, loss, bpb)
    # Every evaluation printed after training is in the export event, diagnostics included.
    assert export["evals"] == {k: {"val_loss": v.val_loss, "val_bpb": v.val_bpb} for k, v in log.evals.items()}
    assert export["evals"][label] == {"val_loss": loss, "val_bpb": bpb}


def test_diagnostics_are_never_the_score():
    log = parse_log((LOGS / "golf_quantized_ttt_phased.txt").read_text())
    # The example: the 2026-04-27 record's seed 42 is scored 1.05989454, not its diagnostic 1.07254.
    assert log.evals["diagnostic_quantized"] == (2.34727563, 1.07254371)
    assert log.evals["diagnostic_pre-quantization_post-ema"] == (2.32848665, 1.06395844)
    assert [is_diagnostic(label) for label in log.evals] == [True, True, False]
    legal = parse_log((LOGS / "golf_legal_ttt.txt").read_text())
    assert is_diagnostic("diagnostic_post_ema") and "diagnostic_post_ema" in legal.evals
    assert is_diagnostic("pre-quantization_post-ema") and not is_diagnostic("quantized")
    # A run that stopped before its first evaluation of the submitted model has no score.
    head = "step:10/10 val_loss:2.1000 val_bpb:1.3000 train_time:1ms step_avg:0.10ms\n"
    cut = parse_log(head + "diagnostic pre-quantization post-ema val_loss:2.3 val_bpb:1.06 eval_time:1ms\n"
                           "diagnostic quantized val_loss:2.34 val_bpb:1.07 eval_time:1ms\n")
    assert (cut.score_label, cut.roundtrip_val_loss, cut.roundtrip_val_bpb) == (None, None, None)


def test_an_evaluation_only_log_has_a_score_but_is_no_training_log():
    # A record's re-evaluation of its saved artifact (2026-04-23, ttt_pr1767/seed_42.log): no step lines.
    fold = LogFold()
    for line in (LOGS / "golf_ttt_eval_only.txt").read_text().splitlines():
        fold.feed(line)
    assert fold.score == ("quantized_ttt_phased", (2.32843161, 1.06400238))
    with pytest.raises(NotATrainingLog):
        fold.parsed()


@pytest.mark.parametrize("tail, label, score", [
    # Its _exact line wins over the rounded one, in either order.
    (["final_int6_roundtrip val_loss:2.0 val_bpb:1.2000", "final_int6_roundtrip_exact val_loss:2.0 val_bpb:1.20001234",
      "final_int6_sliding_window val_loss:1.9 val_bpb:1.1500 stride:64 eval_time:9ms",
      "final_int6_sliding_window_exact val_loss:1.9 val_bpb:1.15004321"], "final_int6_sliding_window", 1.15004321),
    (["final_sliding_window_eval_exact stride:64 val_loss:1.9 val_bpb:1.16301431",
      "final_sliding_window_eval stride:64 val_loss:1.9 val_bpb:1.1630 eval_time:9ms"],
     "final_sliding_window_eval", 1.16301431),
    # Records since 2026-03-22 reprint the score under the baseline's label: the score keeps its own.
    (["final_int6_sliding_window_exact val_loss:1.9 val_bpb:1.12278022",
      "final_int8_zlib_roundtrip_exact val_loss:1.9 val_bpb:1.12278022"], "final_int6_sliding_window", 1.12278022),
    # A later evaluation wins even without an _exact line.
    (["final_int8_zlib_roundtrip_exact val_loss:2.07 val_bpb:1.22837129",
      "final_ttt_lora val_loss:2.0153 val_bpb:1.1935 eval_time:72361ms"], "final_ttt_lora", 1.1935),
    (["final_int8_zlib_roundtrip_exact sliding val_loss:2.02 sliding val_bpb:1.19709881",
      "final_eval_mode:sliding_window stride:64 batch_seqs:32"], "final_int8_zlib_roundtrip_sliding", 1.19709881),
    (["diagnostic quantized val_loss:2.84 val_bpb:1.10076066 eval_time:1ms",
      "quantized_ttt val_loss:2.79 val_bpb:1.08235425 eval_time:1ms"], "quantized_ttt", 1.08235425),
    (["pre-quantization post-ema val_loss:2.81 val_bpb:1.08 eval_time:1ms",
      "quantized val_loss:2.84 val_bpb:1.10 eval_time:1ms"], "quantized", 1.10),
])
def test_the_golf_score_rule_line_by_line(tail, label, score):
    head = ["step:10/10 val_loss:2.1000 val_bpb:1.3000 train_time:1ms step_avg:0.10ms"]
    log = parse_log("\n".join(head + tail))
    assert (log.score_label, log.roundtrip_val_bpb) == (label, score)
    live = LiveLog()
    for line in head + tail:
        live.feed(line)
    export = live.finish()[0]
    assert (export["score_label"], export["roundtrip_val_bpb"]) == (label, score)
