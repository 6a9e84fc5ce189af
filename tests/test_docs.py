"""The README's tables are generated: weights (manifest, registry) and recipes (descriptions)."""

from zoo import docs


def test_weights_and_recipes_tables_are_fresh():
    readme = docs.README.read_text(encoding="utf-8")
    assert docs.render(readme) == readme, "README.md is stale: run python -m zoo.docs"


def test_gmacs_are_computed_not_typed():
    # He et al. 2018, Table 5: ResNet-50-D costs more than ResNet-50 but within 15 %.
    base, tweaked = docs.gmacs("resnet50_v1b", 224), docs.gmacs("resnet50_v1d", 224)
    assert 3.9 < base < 4.2 and 1.0 < tweaked / base < 1.15
