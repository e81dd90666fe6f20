"""A sweep's study in a real sqlite Optuna storage: every selectable sampler proposes points inside the space,
and the study names its value."""

import pytest
from paths import SPACES

from sweep.inputs.space import load_space
from sweep.stores.study import SAMPLERS, create_study, load_study, make_sampler, make_storage


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_proposes_points_inside_the_space(tmp_path, sampler):
    import optuna

    space = load_space(SPACES / "record.yaml")
    study = optuna.create_study(study_name=f"s-{sampler}", storage=make_storage(f"sqlite:///{tmp_path}/o.db"),
                                sampler=make_sampler(sampler, seed=0), direction="minimize")
    dists = space.distributions()
    for i in range(12):
        trial = study.ask(dists)
        assert all(space.params[k].contains(v) for k, v in trial.params.items())
        study.tell(trial, sum(float(v) for v in trial.params.values()))
    assert len(study.trials) == 12
    assert len({tuple(t.params.values()) for t in study.trials}) > 6


def test_a_sweeps_study_carries_its_metric_name(tmp_path):
    # Optuna's dashboard and plots label the value with it, rather than "Objective 0".
    url = f"sqlite:///{tmp_path}/o.db"
    create_study(url, "named", "max", "roundtrip_val_bpb")
    study = load_study(url, "named")
    assert study.metric_names == ["roundtrip_val_bpb"]
    assert study.direction.name == "MAXIMIZE"
