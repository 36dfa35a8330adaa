"""InputError: one line naming the source; it survives the copy and pickle Ray applies to a trial's exception."""
import copy
import pickle

from tune_p7.errors import InputError


def test_input_error_survives_copy_and_pickle():
    err = InputError("space.yaml", "key 'lr': bad")
    for again in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert isinstance(again, InputError) and str(again) == "space.yaml: key 'lr': bad"
        assert (again.source, again.problem) == ("space.yaml", "key 'lr': bad")
