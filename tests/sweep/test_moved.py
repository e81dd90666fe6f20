"""Sweeps saved before `sweep/` was split into packages resume: Tune's saved state names the searcher, the
live view, the stopper and the launch gate by their old module paths."""
import pickle

import pytest

from sweep.orchestration.launch_gate import LaunchGate
from sweep.orchestration.live import LiveView
from sweep.orchestration.rejection import StopOnRejectedInput
from sweep.orchestration.search import StudySearcher


@pytest.mark.parametrize("old_module, cls", [
    ("sweep.search", StudySearcher),
    ("sweep.live", LiveView),
    ("sweep.rejection", StopOnRejectedInput),
    ("sweep.launch_gate", LaunchGate),
])
def test_a_class_pickled_under_its_old_module_path_unpickles_as_todays(old_module, cls):
    # A global reference as pickle writes it (protocol 0): the module path, then the class name.
    saved = f"c{old_module}\n{cls.__name__}\n.".encode()
    assert pickle.loads(saved) is cls


def test_an_old_path_that_never_held_the_name_still_fails():
    with pytest.raises(AttributeError):
        pickle.loads(b"csweep.search\nNoSuchClass\n.")
