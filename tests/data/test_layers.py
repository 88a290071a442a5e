"""``data.layers``: the default target layer of transformers (``norm1`` of the last block)
and the reshape of their tokens to the patch grid (ViT, DeiT, Swin, torchvision's ViT)."""
import pytest
import timm
import torch
import torchvision

from cfcam_fast.data import layers, models


def test_transformers_get_a_norm1_layer_and_a_reshape_to_the_patch_grid():
    vit, layer = models.load_model("vit_tiny_patch16_224")
    assert layer == "blocks.11.norm1" and layers.token_layout(vit) == "vit"
    tokens = torch.arange(197.0)[None, :, None].expand(2, 197, 192)
    grid = layers.reshape_transform(vit)(tokens)
    assert grid.shape == (2, 192, 14, 14)  # the class token dropped, the rest row by row
    assert torch.equal(grid[1, 5], torch.arange(1.0, 197.0).reshape(14, 14))
    assert layers.check_layer(vit, layer, layers.reshape_transform(vit)) == (1, 192, 14, 14)
    with pytest.raises(ValueError, match=r"gives shape \(1, 197, 192\).*--reshape vit"):
        layers.check_layer(vit, layer, layers.reshape_transform(vit, "none"))
    with pytest.raises(ValueError, match="cannot run on 64x64 images"):
        layers.check_layer(vit, layer, layers.reshape_transform(vit), size=64)
    deit = models.load_model("deit_tiny_distilled_patch16_224")[0]
    assert layers.reshape_transform(deit)(torch.zeros(1, 198, 192)).shape == (1, 192, 14, 14)
    # A small timm Swin (one block per stage): its blocks give [B, H, W, C].
    swin = timm.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1), embed_dim=32,
                             num_heads=(1, 1, 1, 1))
    assert (layers.token_layout(swin), layers.default_layer(swin)) == ("swin", "layers.3.blocks.0.norm1")
    assert layers.check_layer(swin, "layers.3.blocks.0.norm1", layers.reshape_transform(swin)) == (1, 256, 7, 7)
    small_vit = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=1,
                                                    hidden_dim=8, mlp_dim=8)
    assert (layers.token_layout(small_vit), layers.default_layer(small_vit)) == \
        ("vit", "encoder.layers.encoder_layer_1.ln_1")
    assert layers.check_layer(small_vit, "encoder.layers.encoder_layer_1.ln_1", layers.reshape_transform(small_vit),
                              size=64) == (1, 8, 4, 4)
    resnet = torchvision.models.resnet18()
    assert layers.token_layout(resnet) == "none" and layers.reshape_transform(resnet) is None
    with pytest.raises(ValueError, match=r"reshape 'vit': ResNet has no patch grid"):
        layers.reshape_transform(resnet, "vit")
