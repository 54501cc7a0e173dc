"""The continual study goes on after a stop: its saved state brings back what was measured and the warm and
sequential chains; the sequential path pays its own trainings, the others each corpus's own model."""

from __future__ import annotations

import json

from registry.demo.study import SEQUENTIAL_CHANNEL, WARM_CHANNEL, Study, cumulative
from training.retain import RetainSettings
from training.sft import SFTSettings

UNKNOWNS = ["Who is Tamsin Vell?", "Where was Orrin Kade born?"]


def _study(reg) -> Study:
    return Study(
        reg,
        SFTSettings(steps=4, batch=8),
        unknowns=UNKNOWNS,
        retain=RetainSettings(target=0.5, max_steps=4, check_every=2, batch=8),
        strategies=("ties", "ties+heal", "warm", "sequential"),
        joint=False,
        rehearse=0.25,
        device="cpu",
        progress=False,
    )


def test_a_resumed_study_keeps_its_arrivals_and_points_the_warm_chain_back(trained):
    first, second = "glassworks", "harbor"
    tv = {c: trained.list_task_vectors(c)[-1] for c in (first, second)}
    stopped = _study(trained)
    one = stopped.arrive(first, tv[first])
    state = json.loads(json.dumps(stopped.state()))  # as the benchmark writes it and reads it back
    stopped.arrive(second, tv[second])  # the run stops here, after moving the warm chain, before saving
    assert trained.get_channel(WARM_CHANNEL).current_merge_id != one.merge.id
    assert trained.get_channel(SEQUENTIAL_CHANNEL).current_merge_id != one.merges["sequential"].id

    study = _study(trained)
    assert study.resume(state) == [first]
    assert trained.get_channel(WARM_CHANNEL).current_merge_id == one.merge.id
    assert trained.get_channel(SEQUENTIAL_CHANNEL).current_merge_id == one.merges["sequential"].id
    (again,) = study.arrivals
    assert again.to_json() == one.to_json() and again.merge == one.merge
    assert again.recall["own"][first].exact == one.recall["own"][first].exact

    two = study.arrive(second, tv[second])
    assert two.k == 2 and set(two.recall["ties"]) == {first, second}
    # The own models' hallucination is the mean over both corpora, the first one's taken from the saved state.
    rates = study.state()["own_hallucination"]
    assert rates[first] == state["own_hallucination"][first]
    assert two.hallucination["own"] == (rates[first] + rates[second]) / 2
    # The second warm model was started from the first's, the one the chain was pointed back at.
    assert two.merge.strategy == "warm" and two.merge.parent_merge_id == one.merge.id
    assert [a["k"] for a in study.state()["arrivals"]] == [1, 2]

    # The sequential chain: the first corpus's own model, then harbor trained onto it (found again after the
    # stop, 4 steps of 8: 1.1x its own 4, rounded), served as both; its cost is that training, not harbor's own too.
    seq1, seq2 = one.merges["sequential"], two.merges["sequential"]
    assert seq1.strategy == "sequential" and seq1.parameters["start"] == tv[first].ref
    assert one.examples["sequential"] == tv[first].cost.examples + seq1.training_cost.examples
    assert seq2.parameters["trained_onto"] == f"merge-{seq1.id}" and seq2.parameters["start"] == "harbor@v2"
    assert two.examples["sequential"] == 4 * 8 + seq2.training_cost.examples
    assert [m.ref for m in two.merges["ties"].members] == [tv[first].ref, tv[second].ref]  # the own vectors
    assert cumulative(study.arrivals, "sequential")[-1][1] == one.examples["sequential"] + two.examples["sequential"]
    assert study.state()["sequential"] == {first: tv[first].ref, second: "harbor@v2"}
    # ... rehearsing the earlier corpus at the study's share (`bench/continual.py --rehearse`), not the default.
    onto = trained.list_task_vectors(second)[-1]
    assert onto.ref == "harbor@v2" and onto.training["rehearsal"]["share"] == 0.25
