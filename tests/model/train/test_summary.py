"""RunSummary: the best held-out figures of a run and whether they beat copying the current concept."""
import json

from model.train.summary import RunSummary, summarize_records, summarize_run


def _eval(step, loss, cos, copy_cos=0.37, top1=0.2, copy_top1=0.1, top5=0.5):
    return {"split": "eval", "step": step, "loss": loss, "cosine": cos, "top1": top1, "top5": top5,
            "copy_cosine": copy_cos, "copy_top1": copy_top1}


def test_best_is_the_eval_record_with_the_lowest_loss():
    recs = [{"split": "train", "step": s, "loss": 9.0} for s in range(1, 31)]
    recs += [_eval(10, 0.9, 0.30), _eval(20, 0.5, 0.44, top1=0.3), _eval(30, 0.7, 0.50)]
    s = summarize_records(recs)
    assert (s.best_step, s.best_eval_loss, s.best_eval_cosine, s.best_eval_top1) == (20, 0.5, 0.44, 0.3)
    assert (s.copy_cosine, s.copy_top1, s.best_eval_top5, s.last_step) == (0.37, 0.1, 0.5, 30)
    assert s.beats_copy is True
    assert s.verdict() == "held-out cosine 0.44 beats copying (0.37) by 0.07"


def test_below_copying_says_so():
    s = summarize_records([_eval(5, 0.8, 0.31)])
    assert s.beats_copy is False
    assert s.verdict() == ("below copying the current concept (0.31 < 0.37): "
                           "the model has not learned more than copying")


def test_without_evals_nothing_is_claimed():
    s = summarize_records([{"split": "train", "step": 3, "loss": 1.0}])
    assert s == RunSummary(last_step=3)
    assert s.beats_copy is None and "no held-out" in s.verdict()
    assert summarize_records([]) == RunSummary()


def test_nan_losses_and_missing_copy_baseline_are_not_best_or_claimed():
    s = summarize_records([_eval(1, float("nan"), 0.9), {"split": "eval", "step": 2, "loss": 1.0, "cosine": 0.4}])
    assert s.best_step == 2 and s.copy_cosine is None and s.beats_copy is None
    assert "no copy baseline" in s.verdict()


def test_summarize_run_reads_metrics_jsonl(tmp_path):
    lines = [json.dumps({"split": "train", "step": 1, "loss": 2.0}), json.dumps(_eval(1, 0.6, 0.5)), '{"half']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    s = summarize_run(tmp_path)
    assert s.best_step == 1 and s.beats_copy is True
    assert summarize_run(tmp_path / "missing") == RunSummary()
