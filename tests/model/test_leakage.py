"""The leakage audit passes on the isolated model, catches the leaky one (op by op), and the
`vmmoe audit` command exits 0 / 1 accordingly."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from model.cli import main
from model.config import VMMoEConfig
from model.leakage import (ATOL, RTOL, AuditReport, audit, default_batch, leaky_config, perturbation_effect,
                           perturbation_report)
from model.vmmoe import LeakyConfigWarning, VMMoE

TINY = VMMoEConfig(d_concept=16, d_model=32, n_layers=2, d_state=8, n_experts=4, top_k=2)


@pytest.fixture(scope="module")
def reports() -> dict[str, AuditReport]:
    return {"isolated": audit(TINY), "leaky": audit(leaky_config(TINY))}


def test_isolated_model_passes_every_check(reports):
    rep = reports["isolated"]
    assert rep.passed and not rep.leaky
    assert {c["check"] for c in rep.checks} == {"boundary_flip", "pack_invariance", "grad_isolation"}
    assert rep.target_moved > 0.1  # the flip really changed the flipped segment: the check is not vacuous
    grads = [r for r in rep.rows if r.check == "grad_isolation"]
    assert grads and all(r.max_abs_delta == 0.0 for r in grads)  # exactly zero, not just small
    ops = {(r.layer, r.op) for r in rep.rows if r.check == "boundary_flip"}
    for op in ("conv", "scan", "router", "moe", "block", "aux.balance", "aux.z"):
        assert ("1", op) in ops
    assert ("loss", "concept_loss") in ops
    assert {p["layer"] for p in rep.per_layer} == {"embed", "0", "1", "head", "loss"}
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["passed"] is True and d["config"]["isolate_segments"] is True
    assert "PASS" in rep.table() and "LEAK" not in rep.table(per_op=True)


def test_leaky_model_is_caught_op_by_op(reports):
    rep = reports["leaky"]
    assert rep.leaky and not rep.passed
    assert all(not c["passed"] for c in rep.checks)
    failing = {(r.check, r.layer, r.op) for r in rep.rows if not r.passed}
    # the first sequence-wise op that leaks is the conv of layer 0, then the scan; token-wise ops before it do not
    assert ("boundary_flip", "0", "conv") in failing and ("boundary_flip", "0", "scan") in failing
    assert ("boundary_flip", "embed", "in_proj") not in failing
    assert ("boundary_flip", "0", "mixer.in_proj") not in failing
    # the row-wide balance statistics leak too, and the loss of the other segments moves
    assert ("pack_invariance", "0", "aux.balance") in failing
    assert ("boundary_flip", "loss", "concept_loss") in failing
    assert ("grad_isolation", "embed", "values") in failing
    worst = max(r.max_abs_delta for r in rep.rows if r.check == "boundary_flip")
    assert worst > 1e-3  # a real, visible leak, far above roundoff
    assert "expected to FAIL" in rep.table() and "LEAK" in rep.table()


def test_audit_of_a_model_after_training_steps_and_of_a_given_batch():
    from model.packing import pack_sequences

    torch.manual_seed(0)
    model = VMMoE(TINY)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    values, ids = default_batch(16, seed=3)
    for _ in range(3):
        out = model(values, ids)
        loss = out.prediction.pow(2).mean() + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    rep = audit(model, (values, ids), target=(2, 0))
    assert rep.passed and rep.target == (2, 0)
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())  # the audit leaves .grad alone
    batch = pack_sequences([torch.randn(n, 16) for n in (6, 2, 9, 4, 7)], max_len=12)
    assert audit(model, batch).passed
    assert model.training  # the audit restores the mode


def test_perturbation_effect_isolated_and_leaky():
    values, ids = default_batch(16)
    torch.manual_seed(0)
    effect = perturbation_effect(VMMoE(TINY), (values, ids), segment=(0, 1))
    assert effect.shape == (TINY.n_layers + 1, 10)  # default batch: 4 + 4 + 2 segments
    assert torch.all(effect[:, 1] > 0.1)
    others = torch.cat([effect[:, :1], effect[:, 2:]], dim=1)
    assert others.max() <= 1e-6
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakyConfigWarning)
        leaky = perturbation_effect(VMMoE(leaky_config(TINY)), (values, ids), segment=(0, 1))
    assert torch.all(leaky[0, 2:] == 0)  # the embedding is token-wise even when leaky
    assert leaky[-1, 2] > 1e-3 and leaky[-1, 3] > 1e-6  # later segments of the same row move
    assert leaky[:, 0].max() <= 1e-6 and leaky[:, 4:].max() <= 1e-6  # earlier segments and other rows do not


def test_perturbation_report_judges_the_heatmap_by_the_audits_tolerance():
    values, ids = default_batch(16)
    torch.manual_seed(0)
    model = VMMoE(TINY)
    rep = perturbation_report(model, (values, ids), segment=(0, 1))
    torch.testing.assert_close(rep.effect, perturbation_effect(model, (values, ids), segment=(0, 1)))
    assert rep.flipped == 1 and rep.layers == ["embed", "0", "1"] and rep.tol.shape == (TINY.n_layers + 1,)
    assert torch.all(rep.tol >= ATOL) and rep.worst <= 1e-6 and not rep.leaks and rep.verdict == "PASS"
    assert rep.others[:, 1].eq(0).all() and rep.effect[:, 1].min() > 0.1
    # the same rule as the audit's boundary_flip check on the same flip: both pass
    assert audit(model, (values, ids), target=(0, 1)).check("boundary_flip")["passed"]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakyConfigWarning)
        leaky_model = VMMoE(leaky_config(TINY))
    leaky = perturbation_report(leaky_model, (values, ids), segment=(0, 1))
    assert leaky.leaks and leaky.verdict == "FAIL" and leaky.worst > leaky.tol_max
    assert leaky.leaking[-1, 2] and not leaky.leaking[:, 0].any() and not leaky.leaking[:, 1].any()
    assert not audit(leaky_model, (values, ids), target=(0, 1)).check("boundary_flip")["passed"]
    # a larger tolerance is the caller's choice, applied the audit's way (atol + rtol * max |x|)
    assert not perturbation_report(leaky_model, (values, ids), segment=(0, 1), atol=1e3, rtol=RTOL).leaks


def test_audit_bad_input():
    with pytest.raises(ValueError, match="VMMoE or a VMMoEConfig"):
        audit({"d_model": 32})
    with pytest.raises(ValueError, match="target"):
        audit(TINY, target=(0, 7))
    with pytest.raises(ValueError, match="segment"):
        perturbation_effect(VMMoE(TINY), default_batch(16), segment=(5, 0))
    values, _ = default_batch(16)
    with pytest.raises(ValueError, match="left to right"):
        audit(TINY, (values, torch.tensor([[0, 2] + [2] * 14] * 3)))


def test_vmmoe_audit_command_exit_codes(tmp_path, capsys):
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(TINY.to_dict()))
    assert main(["audit", "--config", str(cfg_file)]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main(["audit", "--config", str(cfg_file), "--leaky"]) == 1
    out = capsys.readouterr().out
    assert "caught the leak" in out and "LEAK" in out
    assert main(["audit", "--config", str(cfg_file), "--leaky", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["passed"] is False
    cfg_file.write_text(json.dumps({"d_model": 32, "n_layer": 2}))
    assert main(["audit", "--config", str(cfg_file)]) == 1
    assert "n_layer" in capsys.readouterr().err


def test_vmmoe_audit_checkpoint(tmp_path, capsys):
    from model.train.runs import RunDir, save_checkpoint

    torch.manual_seed(0)
    run = RunDir(tmp_path / "run").create({})
    save_checkpoint(run, 1, VMMoE(TINY), TINY.to_dict(), {}, {}, {})
    assert main(["audit", "--checkpoint", str(run.path)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakyConfigWarning)
        assert main(["audit", "--checkpoint", str(run.path), "--leaky"]) == 1
    assert "caught the leak" in capsys.readouterr().out


def test_audit_passes_with_the_recipe_knobs():
    cfg = VMMoEConfig(**{**TINY.to_dict(), "residual_prediction": True, "input_scale": "auto", "dropout": 0.1})
    torch.manual_seed(0)
    model = VMMoE(cfg)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)  # a trained-looking head (it starts at 0)
    assert audit(model).passed
