"""selective.lastLayers beyond the model's own depth would train every block without a word:
the method's setup refuses it, naming the field, the value and the model's count."""
import pytest

from kubetune_api.errors import ConfigError
from kubetune_api.training import TrainingConfig
from kubetune_trainer.model.methods import METHODS
from training_runs import make_config


def _selective(tiny_model_dir, dataset_file, tmp_path, last_layers):
    config = make_config(tiny_model_dir, dataset_file, tmp_path, method="full")
    return TrainingConfig.model_validate({**config.model_dump(by_alias=True), "method": "selective",
                                          "selective": {"lastLayers": last_layers}})


def test_more_last_layers_than_the_model_has_is_refused(tiny_model_dir, dataset_file, tmp_path):
    from kubetune_trainer.model.loading import load_model

    model, _, _ = load_model(_selective(tiny_model_dir, dataset_file, tmp_path, 1).model)
    layers = model.config.num_hidden_layers
    with pytest.raises(ConfigError, match=rf"selective.lastLayers {layers + 1}: the model has only {layers} layers"):
        METHODS["selective"].prepare(model, _selective(tiny_model_dir, dataset_file, tmp_path, layers + 1), None)
    prepared = METHODS["selective"].prepare(model, _selective(tiny_model_dir, dataset_file, tmp_path, layers), None)
    assert all(p.requires_grad for n, p in prepared.named_parameters() if ".layers." in n)
