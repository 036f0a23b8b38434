import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset


class Block(nn.Module):  # torchvision's BasicBlock: two 3x3 convs, a Sequential downsample when shapes change
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layers = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2))
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def small_resnet(num_classes: int = 10, in_channels: int = 1) -> SmallResNet:
    """The factory: builds the unpruned network (secateurs narrows it to a checkpoint's shapes)."""
    return SmallResNet(num_classes, in_channels)


class ImagesAndLabels(Dataset):
    """Your own data: uint8 images [N, H, W] and labels [N], normalised sample by sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).float().div(255).sub(self.mean).div(self.std)
        return x.unsqueeze(0), int(self.labels[i])  # (image [1, H, W], label)
