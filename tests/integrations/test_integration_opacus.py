"""privbench.integrations.opacus: a user's own Opacus DP-SGD loop on digits, audited.

The loop below is written as a user writes it (PrivacyEngine().make_private, their own epochs);
the audit is three calls around it. Gradient canaries pass through Opacus's own Poisson sampling,
per-sample clipping and noise. The correct loop must PASS; a loop whose noise is 10x below what
the accountant records, or whose accountant is told a sampling rate 10x below the one that ran,
must FAIL. The claim is re-accounted with PLD from the accountant's history and must match
Opacus's own PRV epsilon within the accuracy PRV states.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privbench.integrations.opacus import OpacusAudit
from privbench.integrations.opacus_errors import OpacusAuditError
from privbench.privacy import accounting

DELTA = 1e-5


def digits_loader(batch_size: int = 64) -> DataLoader:
    x, y = load_digits(return_X_y=True)
    x_train, _, y_train, _ = train_test_split((x / 16).astype(np.float32), y, test_size=0.25,
                                              random_state=0)
    return DataLoader(TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
                      batch_size=batch_size, shuffle=True)


def user_training(audit: OpacusAudit, *, epsilon: float, epochs: int = 10,
                  bug: str | None = None, accountant: str = "prv"):
    """A user's DP-SGD loop with the audit's calls around it. `bug` breaks it:
    "noise": the noise added is 10x below the noise multiplier the accountant records;
    "sampling": make_private is handed a loader of batch 6 (the accountant's rate) while the
    loop trains on the user's own loader of batch 64 (the rate that ran)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = audit.plant(digits_loader())
    steps = epochs * len(loader)
    z = accounting.calibrate_noise_multiplier(epsilon, DELTA, 1 / len(loader), steps)
    engine = PrivacyEngine(accountant=accountant)
    if bug == "sampling":
        model, optimizer, _ = engine.make_private(
            module=model, optimizer=optimizer, noise_multiplier=z, max_grad_norm=1.0,
            data_loader=DataLoader(loader.dataset, batch_size=6))
        train_loader = loader
    else:
        model, optimizer, train_loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=z,
            max_grad_norm=1.0)
    audit.watch(model, optimizer)
    criterion = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for xb, yb in train_loader:
            optimizer.zero_grad()
            criterion(model(xb), yb).backward()
            optimizer.step()
    return audit.result(engine, delta=DELTA, module=model)


@pytest.fixture
def weak_noise(monkeypatch):
    """The user's DP stack adds noise 10x below the multiplier the accountant records."""
    import opacus.optimizers.optimizer as dp_optimizer

    real = dp_optimizer._generate_noise

    def weak(std, reference, generator=None, secure_mode=False):
        return real(std / 10, reference, generator, secure_mode)

    monkeypatch.setattr(dp_optimizer, "_generate_noise", weak)


def show(name: str, result) -> None:
    print(f"\n{name}: {result.line()}; {result.bound.details['correct']}/"
          f"{result.bound.details['guesses']} guesses right; "
          f"{result.accounting.note}")


def test_honest_opacus_loop_passes_and_accounting_matches_opacus():
    result = user_training(OpacusAudit(canaries=300, seed=0), epsilon=2.0)
    show("honest", result)
    assert result.verdict == "PASS"
    assert result.claim.epsilon == pytest.approx(2.0, abs=0.01)
    check = result.accounting
    assert check.mechanism == "prv" and check.agrees, check.note
    lower, upper = check.opacus_interval
    # PRV's stated accuracy (eps_error 0.01): the true epsilon lies in [lower, upper] and
    # Opacus reports upper; PLD lands inside, within 2 x eps_error of Opacus's figure.
    assert lower <= check.pld_epsilon <= upper
    assert abs(check.opacus_epsilon - check.pld_epsilon) <= 2 * 0.01
    assert result.rows[0].details["verdict"] == "PASS"
    assert result.rows[0].details["opacus_epsilon"] == pytest.approx(check.opacus_epsilon)
    # Every included canary went through Opacus's Poisson sampling (q * steps = 10 expected).
    assert 7 < result.details["canary_sampled_mean"] < 13


def test_opacus_loop_with_noise_10x_too_small_fails(weak_noise):
    result = user_training(OpacusAudit(canaries=300, seed=0), epsilon=2.0)
    show("noise 10x too small", result)
    assert result.claim.epsilon == pytest.approx(2.0, abs=0.01)  # the accountant cannot see it
    assert result.verdict == "FAIL"


def test_opacus_loop_with_under_reported_sampling_rate_fails():
    """Noise calibrated for epsilon 8 at the rate that ran; the accountant records a rate 10x
    smaller and claims about 1.1. The same eps_LB against the honest 8 is no FAIL."""
    result = user_training(OpacusAudit(canaries=700, seed=0), epsilon=8.0, bug="sampling")
    show("sampling rate under-reported 10x", result)
    assert result.claim.epsilon < 1.5
    assert result.verdict == "FAIL"
    assert result.eps_lb < 8.0


def test_rdp_accountant_disagreement_is_shown():
    result = user_training(OpacusAudit(canaries=40, kind="ood", seed=1), epsilon=2.0, epochs=2,
                           accountant="rdp")
    check = result.accounting
    print(f"\n{check.note}")
    assert check.mechanism == "rdp" and check.opacus_epsilon > check.pld_epsilon
    assert "looser by" in check.note and check.note in result.claim.notes
    assert result.surface == "final_model" and result.verdict in ("PASS", "TOO_SMALL")


def test_input_canaries_are_planted_with_their_bits():
    audit = OpacusAudit(canaries=40, kind="ood", seed=3)
    base = digits_loader()
    planted = audit.plant(base)
    assert len(planted.dataset) == len(base.dataset) + int(audit.bits.sum())
    tail = torch.stack([planted.dataset[len(base.dataset) + i][0]
                        for i in range(int(audit.bits.sum()))])
    assert torch.equal(tail, audit.x[audit.bits])
    assert planted.batch_size == base.batch_size


def test_watch_needs_the_loader_and_optimizer_from_make_private():
    audit = OpacusAudit(canaries=20)
    model = nn.Linear(64, 10)
    with pytest.raises(OpacusAuditError, match="call plant"):
        audit.watch(model, torch.optim.SGD(model.parameters(), lr=0.1))
    audit.plant(digits_loader())
    with pytest.raises(OpacusAuditError) as err:
        audit.watch(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert str(err.value).count("\n") == 0 and "DPOptimizer make_private returned" in str(
        err.value)


def test_steps_taken_before_watch_are_refused():
    audit = OpacusAudit(canaries=20, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = PrivacyEngine()
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=audit.plant(digits_loader()),
        noise_multiplier=1.0, max_grad_norm=1.0)
    xb, yb = next(iter(loader))
    nn.functional.cross_entropy(model(xb), yb).backward()
    optimizer.step()  # one step before watch
    optimizer.zero_grad()
    audit.watch(model, optimizer)
    with pytest.raises(OpacusAuditError, match="accountant counted 1 steps but the audit saw 0"):
        audit.result(engine, delta=DELTA)


def test_same_seed_same_numbers():
    first, second = OpacusAudit(canaries=40, seed=5), OpacusAudit(canaries=40, seed=5)
    a = user_training(first, epsilon=2.0, epochs=2)
    b = user_training(second, epsilon=2.0, epochs=2)
    np.testing.assert_array_equal(np.stack(first._observed), np.stack(second._observed))
    assert (a.eps_lb, a.claim.epsilon) == (b.eps_lb, b.claim.epsilon)


def test_mislabelled_canaries_need_a_population():
    with pytest.raises(OpacusAuditError, match="needs population="):
        OpacusAudit(canaries=40, kind="mislabelled")
