"""Every selectable sampler proposes points inside the space, in a real sqlite Optuna storage."""

import pytest
from paths import SPACES

from sweep.inputs.space import load_space
from sweep.stores.study import SAMPLERS, make_sampler, make_storage


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
