"""``CFCAMConfig`` (``core.config``): docs/algorithm.md's defaults, a ValueError naming the
field for each bad value, and a config that is not a ``CFCAMConfig``."""
import dataclasses

import pytest
from helpers import captured, tiny_cnn
from torch import nn

import cfcam_fast as cf


def test_defaults_are_spec_values():
    c = cf.CFCAMConfig()
    assert (c.importance_percentile, c.eps_percentile, c.eps_floor) == (75.0, 25.0, 1e-5)
    assert (c.min_samples_fraction, c.min_samples_floor) == (0.05, 2)
    assert (c.filter, c.sigma, c.truncate, c.weighting) == ("gaussian", 1.0, 4.0, "softmax")


@pytest.mark.parametrize("field,value", [
    ("importance_percentile", -1.0), ("importance_percentile", 100.5),
    ("importance_percentile", float("nan")), ("importance_percentile", "75"),
    ("importance_percentile", True),
    ("eps_percentile", -0.1), ("eps_percentile", 101), ("eps_percentile", None),
    ("eps_floor", -1e-5), ("eps_floor", 0.0), ("eps_floor", float("inf")),
    ("min_samples_fraction", 1.5), ("min_samples_fraction", -0.1),
    ("min_samples_floor", 0), ("min_samples_floor", 2.0), ("min_samples_floor", True),
    ("filter", "box"), ("filter", None),
    ("sigma", 0.0), ("sigma", -1.0), ("sigma", float("nan")),
    ("truncate", 0), ("truncate", float("inf")),
    ("weighting", "uniform"),
    ("dbscan_backend", "hdbscan"),
    ("memory_budget_bytes", 0), ("memory_budget_bytes", 1.5e9), ("memory_budget_bytes", True),
])
def test_invalid_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        cf.CFCAMConfig(**{field: value})


def test_every_field_is_validated():
    # Each field of the dataclass appears in the cases above, so none is left unchecked.
    checked = {"importance_percentile", "eps_percentile", "eps_floor", "min_samples_fraction",
               "min_samples_floor", "filter", "sigma", "truncate", "weighting", "dbscan_backend",
               "memory_budget_bytes"}
    assert {f.name for f in dataclasses.fields(cf.CFCAMConfig)} == checked


@pytest.mark.parametrize("field,value", [
    ("importance_percentile", 0), ("importance_percentile", 100), ("eps_floor", 1e-12),
    ("min_samples_fraction", 0.0), ("min_samples_floor", 1), ("filter", "official"),
    ("weighting", "standardized"), ("weighting", "linear"), ("sigma", 3), ("truncate", 0.5),
])
def test_valid_boundary_values(field, value):
    assert getattr(cf.CFCAMConfig(**{field: value}), field) == value


def test_replace_validates_and_rejects_unknown_fields():
    c = cf.CFCAMConfig().replace(filter="official", sigma=2.0)
    assert (c.filter, c.sigma) == ("official", 2.0)
    with pytest.raises(ValueError, match="sigma"):
        cf.CFCAMConfig().replace(sigma=-1.0)
    with pytest.raises(ValueError, match="colour"):
        cf.CFCAMConfig().replace(colour="red")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        cf.CFCAMConfig().sigma = 2.0


@pytest.mark.parametrize("config", ["gaussian", {"sigma": 1.0}, 1.0])
def test_invalid_config(config):
    A, G = captured()
    with pytest.raises(ValueError, match="config must be a CFCAMConfig"):
        cf.cfcam(A, G, config=config, backend="reference")
    with pytest.raises(ValueError, match="config must be a CFCAMConfig"):
        cf.CFCAM(tiny_cnn(), [nn.Identity()], config=config)
