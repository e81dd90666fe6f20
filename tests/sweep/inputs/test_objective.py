"""A space's objective read from the evaluations a run printed after training: `roundtrip_val_bpb` (the
record's score) and `eval.<label>.<field>` (any one evaluation), with where each value came from."""
from __future__ import annotations

from paths import LOGS

from sweep.inputs.objective import DIVERGED_VALUE, Objective
from sweep.runlog.events import RunState
from sweep.runlog.logparse import LiveLog

HEAD = "step:10/10 val_loss:2.1000 val_bpb:1.3000 train_time:1ms step_avg:0.10ms"


def live_run(lines: list[str]) -> RunState:
    """The run a trial of a program printing `lines` ends with."""
    log, run = LiveLog(), RunState()
    for event in [e for line in lines for e in log.feed(line)] + log.finish():
        run.apply(event)
    return run


def test_an_eval_metric_reads_the_evaluation_it_names():
    run = live_run((LOGS / "golf_quantized_ttt_phased.txt").read_text().splitlines())
    assert list(run.evaluations) == ["diagnostic_pre-quantization_post-ema", "diagnostic_quantized",
                                     "quantized_ttt_phased"]
    assert Objective("eval.quantized_ttt_phased.val_bpb").judge(run) == (1.05989454, "quantized_ttt_phased")
    assert Objective("eval.quantized_ttt_phased.val_loss").judge(run) == (2.31944212, "quantized_ttt_phased")
    # Any label the script prints may be named, a diagnostic too; the record's score is the last one.
    assert Objective("eval.diagnostic_quantized.val_bpb").judge(run) == (1.07254371, "diagnostic_quantized")
    assert Objective("roundtrip_val_bpb").judge(run) == (1.05989454, "quantized_ttt_phased")


def test_an_evaluation_the_run_never_printed_gets_the_penalty():
    run = live_run((LOGS / "golf_legal_ttt.txt").read_text().splitlines())
    assert run.status == "wallclock_cap" and "legal_ttt" in run.evaluations
    assert Objective("eval.quantized_ttt_phased.val_bpb").judge(run) == (
        DIVERGED_VALUE, "penalty: quantized_ttt_phased not printed")
    assert Objective("eval.quantized_ttt_phased.val_bpb", mode="max").judge(run).value == -DIVERGED_VALUE
    assert Objective("eval.quantized_ttt_phased.val_bpb", diverged_value=9.0).judge(run).value == 9.0
    only_loss = live_run([HEAD, "final_ttt_lora val_loss:2.0153 eval_time:72361ms"])
    assert Objective("eval.final_ttt_lora.val_bpb").judge(only_loss) == (
        DIVERGED_VALUE, "penalty: final_ttt_lora printed no finite val_bpb")
    assert Objective("eval.final_ttt_lora.val_loss").judge(only_loss) == (2.0153, "final_ttt_lora")
    nothing = live_run([HEAD])
    assert nothing.evaluations == {} and nothing.export is None
    assert Objective("eval.quantized.val_bpb").judge(nothing) == (DIVERGED_VALUE, "penalty: quantized not printed")
    assert Objective("roundtrip_val_bpb").judge(nothing) == (DIVERGED_VALUE, "penalty: no score")


def test_a_diverged_run_gets_the_penalty_whatever_it_printed():
    run = live_run([HEAD.replace("2.1000", "nan"), "quantized val_loss:2.8 val_bpb:1.1 eval_time:1ms"])
    assert run.status == "diverged"
    assert Objective("eval.quantized.val_bpb").judge(run) == (DIVERGED_VALUE, "penalty: diverged")


def test_the_built_in_trainers_export_holds_its_one_evaluation():
    run = RunState()
    for event in ({"event": "export", "roundtrip_val_loss": 2.33712905, "roundtrip_val_bpb": 1.38061147,
                   "score_label": "final_int6_zstd_roundtrip"},
                  {"event": "final", "step": 1037, "val_loss": 2.3312, "status": "wallclock_cap"}):
        run.apply(event)
    assert run.evaluations == {"final_int6_zstd_roundtrip": {"val_loss": 2.33712905, "val_bpb": 1.38061147}}
    assert Objective("eval.final_int6_zstd_roundtrip.val_bpb").judge(run) == (1.38061147, "final_int6_zstd_roundtrip")
    assert Objective("roundtrip_val_bpb").judge(run) == (1.38061147, "final_int6_zstd_roundtrip")


def test_an_eval_metrics_intermediate_results_use_its_field():
    assert Objective("eval.quantized_ttt_phased.val_bpb").intermediate({"val_loss": 4.0, "val_bpb": 1.5}) == 1.5
    assert Objective("eval.quantized_ttt_phased.val_loss").intermediate({"val_loss": 4.0, "val_bpb": 1.5}) == 4.0
    assert Objective("eval.quantized_ttt_phased.val_bpb").intermediate({"val_loss": 4.0}) == 4.0
