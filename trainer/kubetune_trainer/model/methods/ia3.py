"""IA3: learned vectors that rescale chosen activations; the model stays frozen."""
from kubetune_api.training import Ia3Spec
from kubetune_api.errors import ConfigError


def prepare(model, config, checkpoint=None):
    from peft import IA3Config, TaskType, get_peft_model

    spec = config.ia3 or Ia3Spec()
    ia3 = IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=list(spec.target_modules),
                    feedforward_modules=list(spec.feedforward_modules))
    try:
        return get_peft_model(model, ia3)
    except ValueError as e:  # e.g. no module matches targetModules
        raise ConfigError(f"ia3.targetModules {spec.target_modules}: {e}") from e
