"""Training recipes: the paper's tricks as switches of a typed recipe, and the loop that runs them.

``zoo.train(model, data, recipe=...)`` -> a run directory (see :mod:`zoo.training.rundir`);
``list_recipes()`` / ``resolve(name, ...)`` read the TOML recipes shipped in ``recipes/``.
Nothing below this package imports it.
"""

from zoo.training.recipe import Recipe, RecipeError, list_recipes, resolve

__all__ = ["Recipe", "RecipeError", "ablate", "list_recipes", "resolve", "train"]


def __getattr__(name: str):  # the loop imports torch: only when asked for
    if name == "train":
        from zoo.training.loop import train

        return train
    if name == "ablate":  # the Table-6 ladder (zoo.training.ablation)
        from zoo.training.ablation import ablate

        return ablate
    raise AttributeError(name)
