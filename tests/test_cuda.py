"""The same answers on a CUDA device as on the CPU: incremental occlusion, the
DeconvNet family and a ``zfnet fit``. Skipped where no GPU is present (CI has none);
run them on a GPU machine with ``pytest tests/test_cuda.py``."""

import subprocess
import sys

import pytest
import torch
from captum.attr import Deconvolution, Occlusion
from torchvision import models

from benchmarks.occlusion_speed import calibrated
from captum_deconvnet import DeconvNet, OcclusionSensitivity, top_activations
from captum_deconvnet._scan import OcclusionScan
from captum_deconvnet.correspondence import box_part_masks, occlude
from lightning_zfnet import ZFNetModule, zfnet
from tests.helpers import tiny_training_args

from .incremental_helpers import images

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 rounds convolutions to 10-bit mantissas, differently for a patch than
    for the whole image; compare in true float32."""
    kept = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = kept


@pytest.mark.parametrize(
    ("build", "size"),
    [
        (lambda: models.resnet18(num_classes=10), 64),
        (lambda: models.mobilenet_v2(num_classes=10), 48),
        (
            lambda: models.googlenet(
                num_classes=10, aux_logits=False, init_weights=True
            ),
            64,
        ),
    ],
)
def test_incremental_occlusion_on_cuda_equals_captum_and_the_cpu(
    build, size, monkeypatch, every_plan
):
    # a plan on CUDA too, where the default skips it
    monkeypatch.setattr("captum_deconvnet._scan.PLANS_PAY_ON", ("cpu", "cuda"))
    model = calibrated(build(), size)
    x = images(2, size)
    kwargs = {"sliding_window_shapes": (3, 16, 16), "strides": 8, "target": [1, 7]}
    on_cpu = OcclusionSensitivity(model).attribute(x, **kwargs)
    model, x = model.cuda(), x.cuda()
    regions = [(slice(None), slice(0, 16), slice(0, 16))]
    assert OcclusionScan(model, (x,), 0, regions, torch.tensor(0), (), 1).plan
    ours = OcclusionSensitivity(model, max_batch=8).attribute(x, **kwargs)
    captum = Occlusion(model).attribute(x, perturbations_per_eval=4, **kwargs)
    assert ours.is_cuda
    scale = captum.abs().max()
    assert scale > 1e-4
    torch.testing.assert_close(ours, captum, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(ours.cpu(), on_cpu, rtol=1e-4, atol=1e-4 * scale)


def test_by_default_cuda_runs_full_passes_at_the_largest_batch():
    model = calibrated(models.resnet18(num_classes=10), 64).cuda()
    x = images(1, 64).cuda()
    regions = [(slice(None), slice(0, 16), slice(0, 16))] * 20
    scan = OcclusionScan(
        model, (x,), 0, regions, torch.tensor(0), (), 16, adaptive=True
    )
    assert scan.plan is None
    assert [len(chunk) for chunk, _, _ in scan] == [16, 4]


def test_deconvnet_on_cuda_equals_captum_and_the_cpu():
    torch.manual_seed(0)
    model = zfnet(num_classes=10, width=0.25, input_size=96).eval()
    x = torch.randn(2, 3, 96, 96)
    on_cpu = DeconvNet(model).attribute(x, target=3)
    model, x = model.cuda(), x.cuda()
    ours = DeconvNet(model).attribute(x, target=3)
    assert ours.is_cuda
    torch.testing.assert_close(ours.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
    # without local contrast normalisation Captum's Deconvolution is the reference
    plain = torch.nn.Sequential(*list(model.features)[:2], torch.nn.Flatten())
    plain = torch.nn.Sequential(plain, torch.nn.LazyLinear(4)).cuda()
    plain(x)
    torch.testing.assert_close(
        DeconvNet(plain).attribute(x, target=1),
        Deconvolution(plain).attribute(x, target=1),
    )


def test_zfnet_fit_on_a_gpu_and_its_checkpoint_loads_on_the_cpu(
    fake_data_dir, tmp_path
):
    command = [sys.executable, "-m", "lightning_zfnet.cli", "fit"]
    command += ["--config", "configs/cluttered_fashion_mnist.yaml"]
    command += [f"--trainer.logger.init_args.save_dir={tmp_path}"]
    command += [*tiny_training_args(fake_data_dir), "--trainer.accelerator=gpu"]
    subprocess.run(command, check=True, timeout=300)
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    module = ZFNetModule.load_from_checkpoint(
        checkpoint, map_location="cpu", weights_only=True
    )
    weights = list(module.parameters())
    assert all(w.device.type == "cpu" and w.isfinite().all() for w in weights)


def test_the_analyses_take_cpu_data_to_a_cuda_model():
    """A dataset, masks or boxes on the CPU, as users load them, with the model
    and images on the GPU."""
    torch.manual_seed(0)
    model = zfnet(num_classes=10, width=0.25, input_size=96).eval()
    images = torch.randn(6, 3, 96, 96)
    layer = model.features[4]
    forms = (False, True)  # distinct_images
    on_cpu = [
        top_activations(model, [layer], images, 2, distinct_images=d) for d in forms
    ]
    model.cuda()
    for distinct_images, theirs in zip(forms, on_cpu, strict=True):
        on_gpu = top_activations(  # CPU dataset
            model, [layer], images, 2, distinct_images=distinct_images
        )
        pairs = zip(
            on_gpu.entries("features.4"), theirs.entries("features.4"), strict=True
        )
        for ours, expected in pairs:
            torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    boxes = torch.tensor([[10, 10, 60, 80]] * 6)
    masks = box_part_masks(boxes, (96, 96))
    assert all(
        torch.equal(m.cpu(), masks[k])
        for k, m in box_part_masks(boxes.cuda(), (96, 96)).items()
    )
    cuda_images = images.cuda()
    torch.testing.assert_close(
        occlude(cuda_images, masks["top"]).cpu(), occlude(images, masks["top"])
    )


def test_a_checkpoint_keeps_this_devices_generator_and_older_lists_resume():
    module = ZFNetModule(num_classes=10, in_channels=1, input_size=64, width=0.25)
    module = module.cuda()
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    saved = checkpoint["cuda_rng_state"]
    assert torch.equal(saved, torch.cuda.get_rng_state(module.device))
    expected = torch.rand(3, device=module.device)
    # as older versions saved it on an 8-GPU node: one state per visible device
    module._resumed_rng = {"cuda_rng_state": [saved] * 8}
    module.on_train_start()
    assert torch.equal(torch.rand(3, device=module.device), expected)
