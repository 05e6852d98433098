"""Cross-field checks of a spec's [audit] table: the canary, surface and design each unit, task and
data set can take."""

from __future__ import annotations

from privbench.spec.schema import CellSpec

# The audit designs: (surface, canary) -> the modes that can certify it.
AUDIT_DESIGNS = {
    ("final_model", "mislabelled"): {"one-run"},
    ("final_model", "ood"): {"one-run"},
    ("final_weights", "random-unit"): {"one-run", "fl-one-shot"},
    ("iterates", "random-unit"): {"one-run"},
    ("final_weights", "dirac"): {"one-run", "multi-run"},
    ("iterates", "dirac"): {"one-run", "multi-run"},
}


def audit_problems(spec: CellSpec) -> list[str]:
    """Checks of the [audit] table against the surfaces, canaries and data it needs."""
    a = spec.audit
    if not a.enabled:
        return []
    if spec.privacy.unit != "client" and a.canary == "random-unit":
        return ["audit.canary = 'random-unit': canary clients audit client-level DP; use "
                "privacy.unit = 'client', or 'dirac' gradient canaries for example-level DP-SGD"]
    if a.canary == "dirac":
        if spec.privacy.unit != "example":
            return ["audit.canary = 'dirac': gradient canaries enter example-level DP-SGD; set "
                    "privacy.unit = 'example' or use 'random-unit' canary clients"]
        if a.mode == "multi-run" and (spec.data.clients != 1 or spec.train.cohort != 1
                                      or spec.train.dropout > 0):
            return ["audit.mode = 'multi-run': its Dirac runs are centralised DP-SGD, one client "
                    "training every round; set data.clients = 1, train.cohort = 1 and "
                    "train.dropout = 0, or audit.mode = 'one-run'"]
    surfaces = sorted({s for s, _ in AUDIT_DESIGNS})
    if a.surface not in surfaces:
        return [f"audit.surface = {a.surface!r}: no canary audit reads it yet; use one of "
                f"{', '.join(surfaces)}"]
    canaries = sorted(c for s, c in AUDIT_DESIGNS if s == a.surface)
    problems = []
    if a.canary not in canaries:
        problems.append(f"audit.canary = {a.canary!r}: the {a.surface} surface needs "
                        f"{' or '.join(repr(c) for c in canaries)} canaries")
    elif a.mode not in (modes := AUDIT_DESIGNS[(a.surface, a.canary)]):
        problems.append(f"audit.mode = {a.mode!r}: {a.canary} canaries on the {a.surface} "
                        f"surface support {' or '.join(repr(m) for m in sorted(modes))}")
    if a.estimator in ("gauss-sum", "fdp") and (
            a.mode != "one-run" or a.surface == "final_model"):
        problems.append(f"audit.estimator = {a.estimator!r}: a white-box one-run bound; use "
                        "mode = 'one-run' on final_weights or iterates, or estimator = 'auto'")
    if a.canary == "mislabelled":
        from privbench.data.splits import data_shape

        n_pop = data_shape(spec.data).n_pop
        if a.n_canaries > n_pop:
            problems.append(f"audit.n_canaries = {a.n_canaries}: mislabelled canaries come from "
                            f"the ~{n_pop} population records; lower it or use canary = 'ood'")
    return problems
