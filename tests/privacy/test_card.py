"""`privbench card RUN_DIR` prints a complete privacy card for a sample-level and a client-level
model, and the card, ledger and report section are written beside the weights."""

from __future__ import annotations

import json

from conftest import run_cli, write_suite

CARD_SUITE = """
name = "cards"
seed = 1
[data]
clients = 10
[model]
hidden = [8]
[train]
rounds = 3
cohort = 5
batch_size = 16
[privacy]
epsilon = 4.0
[attacks.loss]
enabled = false
[sweep]
"privacy.unit" = ["client", "example"]
"""

FIELDS = ("dp_setting", "protected", "guarantee_against", "trusted", "data_accesses_covered",
          "released", "unit_of_privacy", "adjacency", "accountant", "statement", "transparency")


def test_card_command_prints_complete_cards_for_client_and_sample_level(tmp_path):
    suite = write_suite(tmp_path / "cards.toml", CARD_SUITE)
    out = tmp_path / "run"
    proc = run_cli("suite", str(suite), "--out", str(out), "--quiet", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    cards = run_cli("card", str(out))
    assert cards.returncode == 0, cards.stderr
    text = cards.stdout
    assert text.count("== privacy card:") == 2
    assert "privacy card: client (" in text and "privacy card: example (" in text
    for field in FIELDS:
        assert text.count(f"{field}:") >= 2, field
    assert "example-level DP-SGD" in text and "central DP: the server" in text
    for cell in (out / "cells").iterdir():
        card = json.loads((cell / "card.json").read_text())
        claim = json.loads((cell / "claim.json").read_text())
        assert card["epsilon"] == claim["epsilon"] <= 4.0
        assert all(card[f] for f in FIELDS if f != "trusted")
        rounds = [json.loads(line) for line in (cell / "ledger.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rounds] == [1, 2, 3]
    assert not (out / "work").exists() or not any((out / "work").iterdir())
    html = (out / "index.html").read_text()
    assert "Privacy cards" in html and "example-level DP-SGD" in html


def test_card_command_names_the_fix_for_a_folder_without_cards(tmp_path):
    proc = run_cli("card", str(tmp_path))
    assert proc.returncode == 2
    assert "no card.json found" in proc.stderr and "Traceback" not in proc.stderr
