"""Each of the paper's tricks against its definition (fact sheet §2-§5), and recipes as data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import zoo
from zoo.training import recipe as R
from zoo.training.data import Layout, StepSampler
from zoo.training.losses import distillation_loss, mixup, smooth_targets, soft_cross_entropy
from zoo.training.params import EMA, param_groups
from zoo.training.schedule import StepPlan, lr_at


def plan(kind: str = "cosine", warmup: int = 5, total: int = 100, milestones=()) -> StepPlan:
    return StepPlan(
        lr=0.4, total_steps=total, warmup_steps=warmup, kind=kind, milestones=milestones, gamma=0.1
    )


def test_warmup_is_linear_from_zero_per_batch() -> None:
    p = plan(warmup=5)
    # batch i (1-based) of m gets i·η/m: steps 0..4 -> 0.08, 0.16, ..., 0.4
    assert [lr_at(s, p) for s in range(5)] == pytest.approx([0.08, 0.16, 0.24, 0.32, 0.4])


def test_cosine_after_warmup_excludes_warmup_and_ends_at_zero() -> None:
    p = plan(warmup=5, total=105)
    assert lr_at(5, p) == pytest.approx(0.4)  # t = 0
    assert lr_at(55, p) == pytest.approx(0.2)  # t = T/2: η/2
    assert lr_at(30, p) == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 100)) * 0.4)
    assert lr_at(105, p) == pytest.approx(0.0, abs=1e-12)


def test_step_decay_divides_by_ten_at_milestones() -> None:
    p = plan(kind="step", warmup=0, total=120, milestones=(30, 60, 90))
    assert [lr_at(s, p) for s in (0, 29, 30, 59, 60, 90, 119)] == pytest.approx(
        [0.4, 0.4, 0.04, 0.04, 0.004, 0.0004, 0.0004]
    )


def test_plan_converts_epochs_to_steps() -> None:
    rec = R.resolve("bag_of_tricks")
    p = StepPlan.from_recipe(rec, steps_per_epoch=10)
    assert (p.total_steps, p.warmup_steps, p.kind, p.lr) == (2000, 50, "cosine", 0.4)


def test_label_smoothing_is_the_papers_target() -> None:
    t = smooth_targets(torch.tensor([2, 0]), num_classes=10, eps=0.1)
    assert t[0, 2] == pytest.approx(0.9) and t[0, 0] == pytest.approx(0.1 / 9)
    assert t.sum(dim=1) == pytest.approx(torch.ones(2))
    # the theoretical logit gap of the paper: log((K-1)(1-ε)/ε) = 9.10 at K = 1000
    k, eps = 1000, 0.1
    t = smooth_targets(torch.tensor([0]), k, eps)
    assert math.log(t[0, 0] / t[0, 1]) == pytest.approx(9.10, abs=0.01)
    assert torch.equal(smooth_targets(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))


def test_mixup_mixes_with_the_reversed_batch() -> None:
    x = torch.arange(4.0).view(4, 1, 1, 1)
    y = smooth_targets(torch.tensor([0, 1, 2, 3]), 4, 0.0)
    mx, my = mixup(x.clone(), y.clone(), 0.7)
    assert mx.flatten().tolist() == pytest.approx(
        [0.7 * 0 + 0.3 * 3, 0.7 * 1 + 0.3 * 2, 0.7 * 2 + 0.3 * 1, 0.7 * 3 + 0.3 * 0]
    )
    assert my[0].tolist() == pytest.approx([0.7, 0, 0, 0.3])
    assert my.sum(dim=1) == pytest.approx(torch.ones(4))


def test_distillation_loss_is_hard_plus_t_squared_soft() -> None:
    torch.manual_seed(0)
    z, r = torch.randn(6, 5), torch.randn(6, 5)
    target = smooth_targets(torch.tensor([0, 1, 2, 3, 4, 0]), 5, 0.1)
    temp = 20.0
    soft = -(torch.softmax(r / temp, 1) * torch.log_softmax(z / temp, 1)).sum(1).mean()
    hard = -(target * torch.log_softmax(z, 1)).sum(1).mean()
    assert distillation_loss(z, r, target, temp) == pytest.approx(float(hard + temp**2 * soft))
    assert distillation_loss(z, r, target, temp, "gluoncv") == pytest.approx(
        float(0.5 * (hard + temp**2 * soft))
    )
    assert soft_cross_entropy(z, target) == pytest.approx(float(hard))


def test_zero_gamma_on_exactly_the_last_bn_of_each_residual_branch() -> None:
    model = zoo.get_model("resnet50_v1d", zero_init_last=True)
    zeroed = {
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d) and torch.all(m.weight == 0)
    }
    blocks = [n for n, m in model.named_modules() if hasattr(m, "bn3")]
    assert len(blocks) == 16
    assert zeroed == {f"{b}.bn3" for b in blocks}  # not the shortcut BN, not bn1/bn2
    plain = zoo.get_model("resnet50_v1d")
    assert not any(
        torch.all(m.weight == 0) for m in plain.modules() if isinstance(m, nn.BatchNorm2d)
    )


def test_no_bias_decay_groups() -> None:
    model = zoo.get_model("resnet18_v1d", num_classes=10)
    decay, no_decay = param_groups(model, 1e-4, no_bias_decay=True)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert "fc.weight" in decayed and any("conv" in n for n in decayed)
    assert "fc.bias" in spared
    bn = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert {f"{b}.weight" for b in bn} | {f"{b}.bias" for b in bn} <= spared
    assert all(model.get_parameter(n).ndim == 4 or n == "fc.weight" for n in decayed)
    (single,) = param_groups(model, 1e-4, no_bias_decay=False)
    assert len(single["params"]) == len(decayed) + len(spared)


def test_ema_follows_the_weights() -> None:
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, start + 0.1)


def test_linear_scaling_and_epoch_rescaling() -> None:
    rec = R.resolve("bag_of_tricks", epochs=20, batch_size=256)
    assert rec.optim.lr == pytest.approx(0.1)  # 0.4 × 256/1024
    assert rec.epochs == 20 and rec.schedule.warmup_epochs == pytest.approx(0.5)
    base = R.resolve("baseline", epochs=12)
    assert base.schedule.milestones == pytest.approx((3, 6, 9))
    mixed = R.resolve("bag_of_tricks", overrides=["tricks.mixup_off_epochs=20"], epochs=50)
    assert mixed.tricks.mixup_off_epochs == pytest.approx(5)


def test_eval_size_follows_the_train_size() -> None:
    race = R.resolve("imagenette_5ep")
    assert (race.img_size, race.eval_img_size, race.eval_size) == (112, 128, 128)
    small = R.resolve("imagenette_5ep", img_size=56)
    assert (small.img_size, small.eval_size) == (56, 64)  # the ratio is kept
    plain = R.resolve("imagenette", img_size=96)
    assert (plain.eval_img_size, plain.eval_size) == (0, 96)  # 0 = the train size
    with pytest.raises(R.RecipeError, match="eval_img_size"):
        R.resolve("imagenette", overrides=["eval_img_size=4"])


def test_recipes_inherit_and_carry_the_papers_settings() -> None:
    base, eff, bot = (R.resolve(n) for n in ("baseline", "efficient", "bag_of_tricks"))
    assert (base.batch_size, base.optim.lr, base.schedule.milestones) == (256, 0.1, (30, 60, 90))
    assert not base.tricks.zero_gamma and base.precision == "fp32" and base.optim.nesterov
    assert (eff.batch_size, eff.optim.lr, eff.schedule.warmup_epochs) == (1024, 0.4, 5)
    assert eff.tricks.zero_gamma and eff.optim.no_bias_decay and eff.precision == "bf16"
    assert (bot.epochs, bot.schedule.kind, bot.tricks.label_smoothing) == (200, "cosine", 0.1)
    assert bot.tricks.mixup_alpha == 0.2 and bot.tricks.distill_temperature == 20
    assert set(R.list_recipes()) >= {
        "baseline",
        "efficient",
        "bag_of_tricks",
        "gluoncv_resnet50_v1d",
        "gluoncv_mobilenet1_0",
    }


def test_recipe_errors_name_the_key() -> None:
    with pytest.raises(R.RecipeError, match=r"'lrr' \(did you mean 'lr'\?\)"):
        R.resolve("baseline", overrides=["optim.lrr=0.3"])
    with pytest.raises(R.RecipeError, match="unknown key.*'epoch'.*valid:"):
        R.resolve("baseline", overrides=["epoch=3"])
    with pytest.raises(R.RecipeError, match="optim.lr expects float|lr expects float"):
        R.resolve("baseline", overrides=["optim.lr=fast"])
    with pytest.raises(R.RecipeError, match="unknown recipe 'basline'.*did you mean baseline"):
        R.resolve("basline")
    with pytest.raises(R.RecipeError, match="schedule.kind must be one of"):
        R.resolve("baseline", overrides=["schedule.kind=linear"])


def test_resolved_recipe_round_trips_through_toml(tmp_path) -> None:
    rec = R.resolve("bag_of_tricks", epochs=7, overrides=["tricks.ema_decay=0.99"])
    path = tmp_path / "recipe.toml"
    path.write_text(rec.to_toml())
    assert R.load_resolved(path) == rec


@pytest.mark.parametrize("world,accum", [(1, 4), (2, 2), (4, 1)])
def test_sampler_splits_a_global_batch_the_same_way_for_any_process_count(world, accum) -> None:
    n, batch = 50, 8
    layout = Layout(batch, world, accum)
    per_rank = [
        list(StepSampler(n, layout, seed=3, epoch=1, start_step=0, rank=r)) for r in range(world)
    ]
    steps = n // batch
    for step in range(steps):
        chunks = [per_rank[r][step * accum + m] for m in range(accum) for r in range(world)]
        ordered = sorted(
            ((m * world + r), per_rank[r][step * accum + m])
            for m in range(accum)
            for r in range(world)
        )
        single = list(StepSampler(n, Layout(batch, 1, world * accum), 3, 1, 0, 0))
        flat = [x for _, chunk in ordered for x in chunk]
        assert flat == [
            x for chunk in single[step * world * accum : (step + 1) * world * accum] for x in chunk
        ]
        assert len({i for c in chunks for i, _ in c}) == batch
    resumed = list(StepSampler(n, layout, 3, 1, start_step=2, rank=0))
    assert resumed == per_rank[0][2 * accum :]


def test_layout_plans_accumulation() -> None:
    assert Layout.plan(1024, 64, 1).accum == 16
    assert Layout.plan(256, 0, 2) == Layout(256, 2, 1)
    assert Layout.plan(96, 40, 1).accum == 3  # 32 per micro-batch, not 40+40+16
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        Layout.plan(256, 0, 3)


def test_teacher_renormalises_resizes_and_picks_the_students_classes() -> None:
    import dataclasses

    import torch.nn.functional as F

    from zoo.preprocess import Preprocess
    from zoo.training.teacher import Teacher

    net = zoo.get_model("mobilenet0_25").eval()
    imagenet_pre = Preprocess(crop=48, resize=55)
    net.pretrained_cfg = dataclasses.replace(
        net.pretrained_cfg, labels="imagenet-1k", preprocess=imagenet_pre
    )
    student_pre = Preprocess(crop=32, resize=37, mean=(0.5,) * 3, std=(0.5,) * 3)
    wnids = ("n02102040", "n01440764")  # Imagenette folders: ImageNet classes 217 and 0
    teacher = Teacher(net, student_pre, wnids)
    x = torch.randn(2, 3, 32, 32)
    pixels = x * 0.5 + 0.5
    mean, std = torch.tensor(imagenet_pre.mean), torch.tensor(imagenet_pre.std)
    expected_in = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    expected_in = F.interpolate(expected_in, size=(48, 48), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = net(expected_in)[:, [217, 0]]
    assert torch.allclose(teacher(x), expected, atol=1e-5)
    teacher.train()
    assert not teacher.model.training  # a teacher never trains its BN statistics
    with pytest.raises(ValueError, match="not in the model's label set"):
        Teacher(net, student_pre, ("not_a_class",))
