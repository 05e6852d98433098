"""The privbench_audit fixture and marker, used by a team's test in a throwaway project.

The team's test trains with its own Opacus loop; the fixture audits it and gates eps_LB against
the claim as `privbench gate` does. A claim the audit refutes fails the test with the gate's
line (gate, measured value, threshold, margin); a claim it does not refute passes and returns
the verdict and eps_LB.
"""

from __future__ import annotations

import re

pytest_plugins = ["pytester"]

TEAM_TEST = '''
import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_train(noise_multiplier):
    def train(audit):
        torch.manual_seed(0)
        x, y = load_digits(return_X_y=True)
        data = TensorDataset(torch.from_numpy((x / 16).astype(np.float32)), torch.from_numpy(y))
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loader = audit.plant(DataLoader(data, batch_size=64, shuffle=True))
        engine = PrivacyEngine()
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=noise_multiplier, max_grad_norm=1.0)
        audit.watch(model, optimizer)
        for _ in range(5):
            for xb, yb in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
        return engine
    return train


@pytest.mark.privbench_audit(integration="opacus", canaries=200, seed=0, delta=1e-5)
def test_claim_refuted(privbench_audit):
    privbench_audit(make_train(0.2), claim=1.0)


@pytest.mark.privbench_audit(integration="opacus", canaries=200, seed=0, delta=1e-5)
def test_claim_holds(privbench_audit):
    result = privbench_audit(make_train(1.5))
    print("RESULT", result.verdict, round(result.eps_lb, 3), round(result.claimed_epsilon, 3))
    assert result.verdict == "PASS" and result.eps_lb <= result.claimed_epsilon
'''


def test_team_test_fails_with_the_gate_line_when_the_audit_refutes_the_claim(pytester):
    pytester.makepyfile(test_team=TEAM_TEST)
    result = pytester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider",
                                           "--junitxml=junit.xml", "-o", "junit_family=xunit1")
    out = result.stdout.str()
    print(out[-3000:])
    result.assert_outcomes(passed=1, failed=1)
    # The refuted claim: the gate, the measured eps_LB, the threshold and a negative margin.
    line = next(ln for ln in out.splitlines() if "eps_lb_not_above_claim [" in ln)
    assert "privbench audit FAIL: eps_lb_not_above_claim [test_claim_refuted]: FAIL" in line
    measured = float(re.search(r"measured ([0-9.]+)", line).group(1))
    margin = float(re.search(r"margin (-[0-9.]+)", line).group(1))
    assert measured > 1.0 and margin == -round(measured - 1.0, 3)
    assert "threshold ≤ claimed ε 1" in line
    assert "Traceback" not in out
    # The claim that holds: verdict and eps_LB returned to the team's test.
    verdict, eps_lb, claimed = re.search(r"RESULT (\w+) ([0-9.]+) ([0-9.]+)", out).groups()
    assert verdict == "PASS" and float(eps_lb) <= float(claimed)
    junit = (pytester.path / "junit.xml").read_text()
    assert "privbench_gate[eps_lb_not_above_claim][test_claim_holds]" in junit
