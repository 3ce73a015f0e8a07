"""Shared by the DeepSpeed fixture scripts (make_ds_fixtures.py, make_elastic_fixture.py), which run
in a virtualenv with deepspeed installed; nothing here is imported by the C++ build or `make test`.
"""


class FakeMpu:
    """DeepSpeedConfig reads the data-parallel world size from mpu.get_data_parallel_world_size(),
    so this stands in for a process group: no distributed set-up is needed to resolve a config."""

    def __init__(self, world):
        self.world = world

    def get_data_parallel_world_size(self):
        return self.world

    def get_data_parallel_rank(self):
        return 0

    def get_model_parallel_world_size(self):
        return 1
