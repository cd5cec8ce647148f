"""Networks for the radlab notebooks, each from one short constructor call.

    import radlab as rl
    rl.models.CNN3D()                      # plain 3D CNN; CNN2D() / CNN25D() same depth and width
    rl.models.SimpleCNN("2.5d", slices=5)  # the same family by name
    rl.models.ResNet3D(depth=18)           # basic blocks; dims="2d" | "2.5d" | "3d"
    rl.models.DenseNet3D()                 # feature reuse by concatenation
    rl.models.UNet3D(skips=False)          # segmentation with or without long skips
    rl.models.PlainCNN3D(depth=20), rl.models.ResidualCNN3D(depth=20)   # gradient flow, equal params
    rl.models.P4Conv3d(1, 8, lifting=True)  # rotation-equivariant group convolution (notebook 04)
    rl.models.StackedCNN3D(models=5)        # five independent CNNs trained as one (notebook 02)

Classifiers map (N, C, D, H, W) to logits (N, num_classes) and have ``.features(x)``,
the pooled feature vector (N, F) before the linear head. Every docstring states
the parameter count at default settings (tests check it).
"""
from ._layers import Classifier, ConvNormAct, count_params, documented_param_count, volume_to_slices
from .cnn import CNN2D, CNN3D, CNN25D, SimpleCNN
from .deep import PlainCNN3D, ResidualCNN3D
from .densenet import DenseLayer, DenseNet3D
from .group import P4CNN, P4BatchNorm, P4Conv2d, P4Conv3d, p4_pool, rotate_p4
from .resnet import BasicBlock, ResNet3D
from .stacked import StackedCNN3D
from .unet import UNet3D

__all__ = ["SimpleCNN", "CNN2D", "CNN25D", "CNN3D", "ResNet3D", "BasicBlock", "DenseNet3D", "DenseLayer",
           "UNet3D", "PlainCNN3D", "ResidualCNN3D", "Classifier", "ConvNormAct", "count_params",
           "documented_param_count", "volume_to_slices", "StackedCNN3D",
           "P4Conv2d", "P4Conv3d", "P4BatchNorm", "P4CNN", "rotate_p4", "p4_pool"]
