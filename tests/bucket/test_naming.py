import pytest

from llc_service.bucket.naming import default_run_id, step_from_name, step_from_trainer_state


@pytest.mark.parametrize("name, step", [
    ("step100", 100), ("step_7", 7), ("checkpoint-2000", 2000), ("global_step42", 42), ("epoch-3-iter-15", 15),
    ("final", None), ("step", None), ("run-a", None),
])
def test_step_from_folder_name(name, step):
    assert step_from_name(name) == step


def test_step_from_trainer_state_tolerates_half_written_files():
    assert step_from_trainer_state('{"global_step": 12, "log_history": []}') == 12
    assert step_from_trainer_state('{"global_st') is None
    assert step_from_trainer_state('{"epoch": 1.0}') is None


def test_default_run_id_is_parent_folder():
    assert default_run_id("ckpts/pythia-70m/step100") == "pythia-70m"
    assert default_run_id("/data/runs/r1/checkpoint-5/") == "r1"
