"""Full fine-tuning: every parameter trains."""


def prepare(model, config, checkpoint=None):
    model.requires_grad_(True)
    return model
